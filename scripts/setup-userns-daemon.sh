#!/usr/bin/env bash
# A second Docker daemon with `userns-remap: default`, for tests/it/userns.rs (Debian 12, root).
# It never touches the main daemon: it runs in its own network namespace (cm-userns) with its
# own containerd, data root, exec root, pidfile, cgroup parent and socket, and gets the test
# image cm-test-busybox:latest from the main daemon (`docker save | docker load`).
#   scripts/setup-userns-daemon.sh         start it if needed, load the image (idempotent)
#   scripts/setup-userns-daemon.sh stop    stop it (by its pid files) and remove its network namespace
# Socket: unix:///run/cm-userns.sock. Log: /var/log/cm-userns-dockerd.log.
# (Same technique as the swarm-lab prototype: containerd and dockerd must share one mount
# namespace, and `ip netns exec` remounts /sys, so the cgroup mounts are made again inside.)
set -euo pipefail

NS=cm-userns
SOCK=/run/cm-userns.sock
PIDFILE=/run/cm-userns.pid
DATA=/var/lib/cm-userns
EXEC=/run/cm-userns-exec
LOG=/var/log/cm-userns-dockerd.log
BRIDGE_IP=172.31.251.1/24
IMAGE=cm-test-busybox:latest

log() { echo "[setup-userns] $*"; }
die() { echo "[setup-userns] ERROR: $*" >&2; exit 1; }
dn() { docker -H "unix://$SOCK" "$@"; }
# is_ours PID SUBSTRING: the process is alive and its command line names SUBSTRING
is_ours() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"; }

# Runs inside `ip netns exec $NS`: containerd, then dockerd (exec).
inside() {
    # cgroup v1: a tmpfs holding one mount per controller; v2: the list has /sys/fs/cgroup itself.
    if ! mountpoint -q /sys/fs/cgroup && ! grep -q '^/sys/fs/cgroup ' "$EXEC/cgroup-mounts.txt"; then
        mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    fi
    while read -r mp fstype opts; do
        mountpoint -q "$mp" && continue
        mkdir -p "$mp"
        mount -t "$fstype" -o "$opts" "$fstype" "$mp"
    done <"$EXEC/cgroup-mounts.txt"
    cat >"$EXEC/containerd.toml" <<TOML
version = 2
root = "$DATA/containerd"
state = "$EXEC/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$EXEC/containerd/containerd.sock"
[ttrpc]
  address = "$EXEC/containerd/containerd.sock.ttrpc"
TOML
    containerd --config "$EXEC/containerd.toml" >>"$LOG" 2>&1 &
    echo $! >"$EXEC/containerd.pid"
    for _ in $(seq 100); do [ -S "$EXEC/containerd/containerd.sock" ] && break; sleep 0.1; done
    cat >"$EXEC/daemon.json" <<JSON
{"userns-remap": "default"}
JSON
    exec dockerd --config-file "$EXEC/daemon.json" \
        --data-root "$DATA" --exec-root "$EXEC" --pidfile "$PIDFILE" -H "unix://$SOCK" \
        --containerd "$EXEC/containerd/containerd.sock" \
        --bip "$BRIDGE_IP" --cgroup-parent cm-userns >>"$LOG" 2>&1
}

stop() {
    local p c
    p=$(cat "$PIDFILE" 2>/dev/null || true)
    if is_ours "$p" "$SOCK"; then
        kill -TERM "$p"
        for _ in $(seq 150); do [ -d "/proc/$p" ] || break; sleep 0.2; done
        [ -d "/proc/$p" ] && kill -KILL "$p"
        log "stopped dockerd $p"
    fi
    c=$(cat "$EXEC/containerd.pid" 2>/dev/null || true)
    if is_ours "$c" "$EXEC/containerd.toml"; then
        kill -TERM "$c"
        for _ in $(seq 50); do [ -d "/proc/$c" ] || break; sleep 0.2; done
        [ -d "/proc/$c" ] && kill -KILL "$c"
        log "stopped containerd $c"
    fi
    if ip netns list | awk '{print $1}' | grep -qx "$NS"; then
        for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$NS"
        log "deleted network namespace $NS"
    fi
    rm -f "$SOCK" "$PIDFILE"
}

case "${1:-}" in
    __inside) inside; exit ;;
    stop) stop; exit ;;
    "") ;;
    *) echo "usage: $0 [stop]" >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root"
if ! command -v ip >/dev/null; then
    log "installing iproute2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null ||
        { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; } ||
        die "cannot install iproute2"
fi
command -v containerd >/dev/null || die "containerd is missing (scripts/setup-docker.sh installs docker.io)"
docker info >/dev/null 2>&1 || die "the main Docker daemon is not running (scripts/setup-docker.sh)"

if ! dn info >/dev/null 2>&1; then
    # A daemon that died leaves its pid files and namespace behind: clear them first.
    stop >/dev/null
    mkdir -p "$DATA" "$EXEC/containerd"
    # The host's cgroup (v1 or v2) mounts, made again inside the namespace.
    awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break; mp = $5; fs = $(i+1); so = $(i+3);
           if ((mp == "/sys/fs/cgroup" || mp ~ "^/sys/fs/cgroup/") && (fs == "cgroup" || fs == "cgroup2")) {
             sub(/^rw,/, "", so); if (so ~ /^name=/) so = "none," so; print mp, fs, so } }' \
        /proc/self/mountinfo >"$EXEC/cgroup-mounts.txt"
    ip netns add "$NS"
    ip -n "$NS" link set lo up
    log "starting dockerd (userns-remap: default) in network namespace $NS"
    setsid ip netns exec "$NS" bash "$(readlink -f "$0")" __inside </dev/null >/dev/null 2>&1 &
    for _ in $(seq 300); do dn info >/dev/null 2>&1 && break; sleep 0.2; done
    dn info >/dev/null 2>&1 || { tail -20 "$LOG" >&2; die "dockerd did not come up (see $LOG)"; }
fi
dn info --format '{{.SecurityOptions}}' | grep -q 'name=userns' || die "the daemon at $SOCK does not remap user namespaces"

# The test image, loaded again when the main daemon's copy changed.
want=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null) || die "$IMAGE is missing (scripts/setup-docker.sh builds it)"
have=$(dn image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    log "loading $IMAGE"
    docker save "$IMAGE" | dn load -q >/dev/null
fi
# No leftovers of earlier test runs.
ids=$(dn ps -aq --filter label=com.container-manager.tag=test)
[ -z "$ids" ] || dn rm -f $ids >/dev/null
nets=$(dn network ls -q --filter label=com.container-manager.tag=test)
[ -z "$nets" ] || dn network rm $nets >/dev/null
log "ready: unix://$SOCK, root in a container is $(dn info --format '{{.DockerRootDir}}' | sed 's|.*/||') on the host"
