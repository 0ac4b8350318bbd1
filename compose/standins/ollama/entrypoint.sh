#!/bin/sh
# ollama stand-in server (busybox sh). Command-line arguments (e.g. "serve")
# are ignored on purpose. Serves on :11434:
#   GET /             -> Ollama is running
#   GET /api/version  -> {"version":"$STANDIN_VERSION"}
#   GET /api/tags     -> {"models":[...]} rebuilt every 2 s from the manifests
#   GET /api/ps       -> {"models":[]}
# STANDIN_BROKEN=1 (or a version containing "broken") starts without serving.

PORT=11434
WWW=/tmp/www
MODELS=${OLLAMA_MODELS:-/root/.ollama/models}
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

broken=0
case "$STANDIN_BROKEN" in 1|true|yes) broken=1 ;; esac
case "$VERSION" in *broken*) broken=1 ;; esac

# Print one /api/tags entry per manifest found under $MODELS/manifests/<host>/<ns>/<model>/<tag>.
list_models() {
    [ -d "$MODELS/manifests" ] || return 0
    first=1
    find "$MODELS/manifests" -mindepth 4 -maxdepth 4 -type f 2>/dev/null | sort |
    while IFS= read -r f; do
        rel=${f#"$MODELS/manifests/"}
        host=${rel%%/*}; rest=${rel#*/}
        ns=${rest%%/*};  rest=${rest#*/}
        model=${rest%%/*}; tag=${rest#*/}
        case "$tag" in */*|'') continue ;; esac
        if [ "$host" = registry.ollama.ai ]; then
            if [ "$ns" = library ]; then name="$model:$tag"; else name="$ns/$model:$tag"; fi
        else
            name="$host/$ns/$model:$tag"
        fi
        digest=$(sha256sum "$f" 2>/dev/null | cut -c1-64)
        mtime=$(stat -c %Y "$f" 2>/dev/null || echo 0)
        modified=$(date -u -d "@$mtime" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo 1970-01-01T00:00:00Z)
        # sum of the "size" fields in the manifest (config + layers); 0 if none
        size=$(tr ',{}[]' '\n\n\n\n\n' < "$f" 2>/dev/null |
               sed -n 's/^[[:space:]]*"size"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' |
               awk '{s+=$1} END {printf "%.0f", s+0}')
        [ -n "$size" ] || size=0
        n=$(json_escape "$name")
        [ $first = 1 ] && first=0 || printf ','
        printf '{"name":"%s","model":"%s","modified_at":"%s","size":%s,"digest":"%s","details":{"parent_model":"","format":"gguf","family":"","families":null,"parameter_size":"","quantization_level":""}}' \
            "$n" "$n" "$modified" "$size" "$digest"
    done
}

write_tags() {
    { printf '{"models":['; list_models; printf ']}'; } > "$WWW/api/.tags.tmp" &&
        mv -f "$WWW/api/.tags.tmp" "$WWW/api/tags"
}

mkdir -p /tmp "$MODELS" "$WWW/api" || exit 1
printf 'Ollama is running' > "$WWW/index.html"
printf '{"version":"%s"}' "$(json_escape "$VERSION")" > "$WWW/api/version"
printf '{"models":[]}' > "$WWW/api/ps"
write_tags

if [ $broken = 1 ]; then
    echo "ollama stand-in $VERSION: BROKEN mode, not serving" >&2
else
    httpd -f -p "$PORT" -h "$WWW" &
    HTTPD_PID=$!
    echo "ollama stand-in $VERSION listening on :$PORT (models in $MODELS)" >&2
fi

while :; do
    sleep 2 &
    SLEEP_PID=$!
    wait "$SLEEP_PID"
    SLEEP_PID=
    if [ -n "$HTTPD_PID" ] && ! kill -0 "$HTTPD_PID" 2>/dev/null; then
        echo "ollama stand-in: httpd exited" >&2
        exit 1
    fi
    [ $broken = 1 ] || write_tags
done
