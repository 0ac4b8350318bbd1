#!/bin/sh
# mcpo stand-in server (busybox sh). Command-line arguments (the real image's
# --host/--port/--api-key/--config ...) are ignored; it always listens on :8000.
#   GET /openapi.json -> {"openapi":"3.1.0","info":{"title":"mcp-time","version":"$STANDIN_VERSION"},"paths":{}}
#   GET /docs         -> small HTML page
# STANDIN_BROKEN=1 (or a version containing "broken") starts without serving.

PORT=8000
WWW=/tmp/www
VERSION=${STANDIN_VERSION:-0.0.0-standin}

HTTPD_PID=
SLEEP_PID=
stop() {
    [ -n "$HTTPD_PID" ] && kill "$HTTPD_PID" 2>/dev/null
    [ -n "$SLEEP_PID" ] && kill "$SLEEP_PID" 2>/dev/null
    exit 0
}
trap stop TERM INT

json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
html_escape() { printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'; }

broken=0
case "$STANDIN_BROKEN" in 1|true|yes) broken=1 ;; esac
case "$VERSION" in *broken*) broken=1 ;; esac

mkdir -p /tmp "$WWW" || exit 1
printf '{"openapi":"3.1.0","info":{"title":"mcp-time","version":"%s"},"paths":{}}' \
    "$(json_escape "$VERSION")" > "$WWW/openapi.json"
cat > "$WWW/docs" <<HTML
<!doctype html>
<html><head><meta charset="utf-8"><title>mcp-time - Swagger UI</title></head>
<body><h1>mcp-time</h1><p>mcpo stand-in, version $(html_escape "$VERSION"). OpenAPI: <a href="/openapi.json">/openapi.json</a></p></body></html>
HTML
printf '.json:application/json\n' > /tmp/httpd.conf

if [ $broken = 1 ]; then
    echo "mcpo stand-in $VERSION: BROKEN mode, not serving" >&2
else
    httpd -f -p "$PORT" -h "$WWW" -c /tmp/httpd.conf &
    HTTPD_PID=$!
    echo "mcpo stand-in $VERSION listening on :$PORT" >&2
fi

while :; do
    sleep 5 &
    SLEEP_PID=$!
    wait "$SLEEP_PID"
    SLEEP_PID=
    if [ -n "$HTTPD_PID" ] && ! kill -0 "$HTTPD_PID" 2>/dev/null; then
        echo "mcpo stand-in: httpd exited" >&2
        exit 1
    fi
done
