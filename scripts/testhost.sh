#!/bin/bash
# A real second "remote host" on this machine: a network namespace with its own
# dockerd and sshd, reachable from the host over a veth pair.
#
# Usage: bash scripts/testhost.sh up   NAME DIR
#        bash scripts/testhost.sh down NAME DIR
# NAME: short id (<= 8 chars, used in interface names); DIR: absolute, owned by
# the caller.  `up` writes DIR/ssh_config (Host NAME), DIR/known_hosts,
# DIR/id_ed25519, DIR/host_key.pub and DIR/env.  The /30 is TESTHOST_SUBNET if
# set, else derived from NAME inside 10.213.0.0/16 (host end .1, ns end .2).
set -euo pipefail

usage() { echo "usage: $0 up|down NAME DIR" >&2; exit 2; }
[ $# -eq 3 ] || usage
CMD=$1 NAME=$2 DIR=$3
[[ $NAME =~ ^[a-z][a-z0-9]{0,7}$ ]] || { echo "NAME must match [a-z][a-z0-9]{0,7}" >&2; exit 2; }
[[ $DIR == /* ]] || { echo "DIR must be absolute" >&2; exit 2; }

SOCK=/run/docker-$NAME.sock
EXEC_ROOT=/run/docker-$NAME-exec
DATA_ROOT=$DIR/docker-root
NSPATH=/run/netns/$NAME
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SHIM_DIR=$HERE/../tests/support/bin
say() { echo "testhost[$NAME]: $*"; }
die() { echo "testhost[$NAME]: ERROR: $*" >&2; exit 1; }

subnet() {  # prints "NET HOST_ADDR NS_ADDR"
    local net=${TESTHOST_SUBNET:-} a b c d
    if [ -z "$net" ]; then
        local n=$(( $(printf %s "$NAME" | cksum | cut -d' ' -f1) % 16384 ))
        net=10.213.$((n / 64)).$((n % 64 * 4))/30
    fi
    IFS=./ read -r a b c d _ <<<"$net"
    d=$((d & ~3))
    echo "$a.$b.$c.$d/30 $a.$b.$c.$((d + 1)) $a.$b.$c.$((d + 2))"
}
read -r NET HOST_ADDR NS_ADDR <<<"$(subnet)"

# Alive and not a zombie (our daemons are reparented to PID 1, which may reap late).
alive() { local st; st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; st=${st##*) }; [ "${st:0:1}" != Z ]; }

# Stop a pid recorded in DIR/$1, but only if it still looks like $2 (no pid reuse accidents).
stop_pid() {
    local f=$DIR/$1 pat=$2 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if [ -n "$pid" ] && grep -qa -- "$pat" "/proc/$pid/cmdline" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 100); do alive "$pid" || break; sleep 0.2; done
        if alive "$pid"; then say "pid $pid ($1) ignored TERM for 20s, killing"; kill -KILL "$pid" || true; fi
    fi
    rm -f "$f"
}

down() {
    stop_pid sshd.pid "$DIR/sshd_config"
    # dockerd 20.10 gives each container 10 s on shutdown (PID-1 sleepers ignore
    # TERM); stop them through our own daemon first to keep `down` fast.
    if [ -S "$SOCK" ]; then
        local ids; ids=$(timeout 10 docker -H "unix://$SOCK" ps -q 2>/dev/null || true)
        [ -z "$ids" ] || timeout 20 docker -H "unix://$SOCK" stop -t 1 $ids >/dev/null 2>&1 || true
    fi
    stop_pid dockerd.pid "$SOCK"          # dockerd stops its containers + containerd
    stop_pid containerd.pid "$EXEC_ROOT"  # only if dockerd had to be KILLed
    ip link del "$NAME-h" 2>/dev/null || true
    [ -e "$NSPATH" ] && { ip netns del "$NAME" 2>/dev/null || true; }
    # dockerd shares our mount namespace: leftovers (overlay, netns bind mounts, shm)
    # would block rm.  Deepest first.
    awk -v a="$EXEC_ROOT" -v b="$DATA_ROOT" '$5 == a || index($5, a "/") == 1 || $5 == b || index($5, b "/") == 1 {print $5}' \
        /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$DATA_ROOT" "$EXEC_ROOT" "$SOCK" "/run/docker-$NAME.pid"
}

up() {
    down  # clear partial state from an earlier run with the same NAME/DIR
    # On any failure below, tear down again (logs in DIR are kept).
    trap 'rc=$?; [ $rc = 0 ] || { say "up failed, cleaning up"; down >/dev/null 2>&1; }; exit $rc' EXIT
    [ ! -e "$NSPATH" ] || die "netns $NAME already exists"
    [ -z "$(ip -o -4 addr show to "$NET")" ] || die "$NET is already in use on this host"
    mkdir -p "$DIR" /run/sshd
    cd "$DIR"

    # --- network ---------------------------------------------------------------
    ip netns add "$NAME"
    ip link add "$NAME-h" type veth peer name "$NAME-n" netns "$NAME"
    ip addr add "$HOST_ADDR/30" dev "$NAME-h"
    ip link set "$NAME-h" up
    ip -n "$NAME" addr add "$NS_ADDR/30" dev "$NAME-n"
    ip -n "$NAME" link set "$NAME-n" up
    ip -n "$NAME" link set lo up

    # --- dockerd ---------------------------------------------------------------
    # Own --config-file so /etc/docker/daemon.json is not inherited; own key path
    # because dockerd 20.10 derives its daemon ID from /etc/docker/key.json (both
    # daemons would report the same ID).  NET is an insecure registry range so
    # the "remote" can pull from a plain-http registry on the host end.
    cat > daemon.json <<JSON
{"deprecated-key-path": "$DIR/key.json", "insecure-registries": ["$NET"]}
JSON
    # nsenter, not `ip netns exec` (that remounts /sys, then no devices cgroup).
    # --exec-root keeps the managed containerd (socket, state, runc root) apart
    # from the host daemon's /run/docker; its data lives under --data-root.
    setsid nsenter --net="$NSPATH" dockerd --config-file "$DIR/daemon.json" \
        -H "unix://$SOCK" --data-root "$DATA_ROOT" --exec-root "$EXEC_ROOT" \
        --pidfile "/run/docker-$NAME.pid" --bip 172.31.251.1/24 \
        ${TESTHOST_STORAGE_DRIVER:+--storage-driver "$TESTHOST_STORAGE_DRIVER"} \
        >"$DIR/dockerd.log" 2>&1 </dev/null &
    echo $! > dockerd.pid   # nsenter execs dockerd: same pid
    for _ in $(seq 120); do
        docker -H "unix://$SOCK" info >/dev/null 2>&1 && break
        alive "$(cat dockerd.pid)" || break
        sleep 0.5
    done
    docker -H "unix://$SOCK" info >/dev/null 2>&1 \
        || { tail -n 20 dockerd.log >&2; die "second dockerd not ready (see $DIR/dockerd.log)"; }
    cp "$EXEC_ROOT/containerd/containerd.pid" containerd.pid 2>/dev/null || true

    # --- sshd ------------------------------------------------------------------
    rm -f ssh_host_ed25519_key* id_ed25519*
    ssh-keygen -q -t ed25519 -N '' -C "testhost-$NAME" -f ssh_host_ed25519_key
    ssh-keygen -q -t ed25519 -N '' -C "client@testhost-$NAME" -f id_ed25519
    cp id_ed25519.pub authorized_keys
    cp ssh_host_ed25519_key.pub host_key.pub
    echo "$NS_ADDR,$NAME $(cut -d' ' -f1,2 host_key.pub)" > known_hosts
    cat > sshd_config <<CFG
ListenAddress $NS_ADDR
Port 22
HostKey $DIR/ssh_host_ed25519_key
AuthorizedKeysFile $DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile $DIR/sshd.pid
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
SetEnv DOCKER_HOST=unix://$SOCK
CFG
    nsenter --net="$NSPATH" /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log" \
        || die "sshd failed (see $DIR/sshd.log)"
    cat > ssh_config <<CFG
Host $NAME
    HostName $NS_ADDR
    User root
    Port 22
    IdentityFile $DIR/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $DIR/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
CFG
    printf 'TESTHOST_NAME=%s\nTESTHOST_ADDR=%s\nTESTHOST_DOCKER_HOST=%s\n' \
        "$NAME" "$NS_ADDR" "unix://$SOCK" > env

    # --- verify (real ssh binary: the caller's PATH may hold the shim) ---------
    local remote_id="" host_id home
    for _ in $(seq 20); do  # sshd daemonizes before it listens
        remote_id=$(/usr/bin/ssh -F ssh_config -o ConnectTimeout=5 "$NAME" 'docker info --format {{.ID}}' 2>/dev/null) && break
        sleep 0.25
    done
    [ -n "$remote_id" ] || { /usr/bin/ssh -F ssh_config "$NAME" 'docker info --format {{.ID}}' || true; die "ssh $NAME docker info failed"; }
    host_id=$(docker -H unix:///var/run/docker.sock info --format '{{.ID}}' 2>/dev/null || true)
    [ "$remote_id" != "$host_id" ] || die "ssh $NAME reached the host daemon, not the second one"
    # the way the tests will use it: docker CLI -> ssh shim -> $HOME/.ssh/config
    home=$(mktemp -d "$DIR/home.XXXXXX")
    mkdir -m 700 "$home/.ssh"
    echo "Include $DIR/ssh_config" > "$home/.ssh/config"
    cp known_hosts "$home/.ssh/known_hosts"
    [ "$(HOME=$home PATH=$SHIM_DIR:$PATH docker -H "ssh://$NAME" info --format '{{.ID}}')" = "$remote_id" ] \
        || die "docker -H ssh://$NAME (via ssh shim) failed"
    rm -rf "$home"
    trap - EXIT
    say "up: ssh $NAME -> $NS_ADDR, docker $SOCK (ID $remote_id)"
}

case $CMD in
    up) up ;;
    down) down; say "down" ;;
    *) usage ;;
esac
