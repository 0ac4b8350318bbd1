#!/bin/sh
# open-webui stand-in server (busybox sh). Command-line arguments are ignored.
# Serves on :8080:
#   GET /             -> small HTML page
#   GET /health       -> {"status":true}
#   GET /api/version  -> {"version":"$STANDIN_VERSION"}
#   GET /ollama/api/version -> its OLLAMA_BASE_URL's version, or 500 (serve.sh)
# Data dir /app/backend/data (webui.db created empty if absent). If
# WEBUI_SECRET_KEY is non-empty its sha256 is written to
# /app/backend/data/.secret_key_sha256 (the key itself is never printed);
# if it is unset/empty that file is removed.
# STANDIN_BROKEN=1 (or a version containing "broken") starts without serving.

PORT=8080
WWW=/tmp/www
DATA=/app/backend/data
VERSION=${STANDIN_VERSION:-0.0.0-standin}

SERVER_PID=
SLEEP_PID=
stop() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    [ -n "$SLEEP_PID" ] && kill "$SLEEP_PID" 2>/dev/null
    exit 0
}
trap stop TERM INT

json_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
html_escape() { printf '%s' "$1" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'; }

broken=0
case "$STANDIN_BROKEN" in 1|true|yes) broken=1 ;; esac
case "$VERSION" in *broken*) broken=1 ;; esac

mkdir -p /tmp "$DATA" "$WWW/api" || exit 1
[ -e "$DATA/webui.db" ] || : > "$DATA/webui.db"
if [ -n "$WEBUI_SECRET_KEY" ]; then
    printf '%s' "$WEBUI_SECRET_KEY" | sha256sum | cut -c1-64 > "$DATA/.secret_key_sha256"
else
    rm -f "$DATA/.secret_key_sha256"
fi

cat > "$WWW/index.html" <<HTML
<!doctype html>
<html><head><meta charset="utf-8"><title>Open WebUI</title></head>
<body><h1>Open WebUI</h1><p>ollama-stack stand-in, version $(html_escape "$VERSION")</p></body></html>
HTML
printf '{"status":true}' > "$WWW/health"
printf '{"version":"%s"}' "$(json_escape "$VERSION")" > "$WWW/api/version"

if [ $broken = 1 ]; then
    echo "open-webui stand-in $VERSION: BROKEN mode, not serving" >&2
else
    # busybox httpd cannot run a script on a path outside /cgi-bin: a
    # listener hands each connection to serve.sh, which passes the rest on.
    nc -ll -p "$PORT" -e /serve.sh &
    SERVER_PID=$!
    echo "open-webui stand-in $VERSION listening on :$PORT (data in $DATA)" >&2
fi

while :; do
    sleep 5 &
    SLEEP_PID=$!
    wait "$SLEEP_PID"
    SLEEP_PID=
    if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "open-webui stand-in: its listener exited" >&2
        exit 1
    fi
done
