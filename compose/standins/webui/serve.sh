#!/bin/sh
# One HTTP connection to the open-webui stand-in (`nc -ll -e` runs this per
# connection, the socket on stdin and stdout).
#   GET /ollama/api/version -> as Open WebUI answers it: it asks its own
#       OLLAMA_BASE_URL for /api/version and passes the version on, or answers
#       500 {"detail":"WebUI could not connect to Ollama"} when no Ollama does
#       (no login needed, as in the real one)
#   anything else -> the request as read, handed to busybox httpd (inetd mode)
WWW=/tmp/www
CR=$(printf '\r')
set -f  # the request line is split below: no globbing of what a client sent

IFS= read -r -t 10 line || exit 0
line=${line%"$CR"}
request=$line
while IFS= read -r -t 10 header; do
    header=${header%"$CR"}
    [ -z "$header" ] && break
    request="$request$CR
$header"
done

answer() {  # STATUS BODY (ASCII JSON)
    printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
        "$1" "${#2}" "$2"
}

set -- $line  # METHOD PATH PROTOCOL
if [ "$2" = /ollama/api/version ]; then
    base=${OLLAMA_BASE_URL%/}
    found=$(timeout 5 wget -q -O - "$base/api/version" 2>/dev/null |
        sed -n 's/.*"version" *: *"\([^"\\]*\)".*/\1/p')
    if [ -n "$found" ]; then
        answer "200 OK" "{\"version\":\"$found\"}"
    else
        answer "500 Internal Server Error" '{"detail":"WebUI could not connect to Ollama"}'
    fi
    exit 0
fi
printf '%s\r\n\r\n' "$request" | exec httpd -i -h "$WWW"
