#!/usr/bin/env bash
# Install ollama-stack into ./.venv and start the stack on this machine.
# Usage: bash scripts/install.sh [--standins]
#   --standins  build the offline stand-in images and use them (for machines
#               that cannot reach a registry, like CI boxes or air-gapped hosts)
# As root it also installs and starts Docker (Debian's docker.io) when no
# engine answers, and links the Compose v2 plugin from the venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# CI may start us with a bare environment: make sure of HOME and the sbin dirs
# (dockerd, sshd and ip live there on Debian).
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

standins=0
[ "${1:-}" = "--standins" ] && standins=1

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[compose]' 2>&1 | { grep -v '^WARNING: Location' || [ $? -eq 1 ]; }
# An editable install compiles nothing: without this the first run of each
# command pays for compiling every module it imports.
.venv/bin/python -m compileall -q tasks stack compose common extensions backups >/dev/null
if [ "$(id -u)" = 0 ]; then
    bash scripts/ensure-docker.sh "$PWD/.venv"
fi

cli=.venv/bin/ollama-stack
[ "$standins" = 1 ] && "$cli" dev.standins
# install refuses to overwrite an existing installation (exit 10): keep it.
"$cli" stack.install || [ $? -eq 10 ]
if [ "$standins" = 1 ]; then
    "$cli" stack.start --pull never
else
    "$cli" stack.start
fi
echo "Manage it with: .venv/bin/ollama-stack --list   (or: source .venv/bin/activate; inv --list)"
