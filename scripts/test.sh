#!/usr/bin/env bash
# Run every test on a fresh machine: installs what the suite needs first
# (Debian's docker.io with dockerd started if none runs, the Compose v2
# plugin, dev dependencies, sshd/iproute2/registry for the second host), then
# lint, unit and integration tests. Stand-in images are built by the suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# CI may start us with a bare environment: make sure of HOME and the sbin dirs
# (dockerd, sshd and ip live there on Debian).
export HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v '^WARNING: Location' || [ $? -eq 1 ]; }
bash scripts/ensure-docker.sh --test-tools "$PWD/.venv"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== pytest"
# Integration prerequisites missing on this machine are a failure, not a skip.
export OST_REQUIRE_INTEGRATION=1
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    # pytest's "no tests collected": fine for a filtered run, a defect for the full one.
    echo "pytest collected no tests"
    [ "$#" -gt 0 ] && exit 0
    exit 1
fi
exit "$rc"
