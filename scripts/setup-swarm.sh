#!/usr/bin/env bash
# A three-node Docker Swarm on this one machine, for tests/it/swarm.rs and benches/swarm.rs
# (Debian 12, root). Each node is its own containerd + dockerd in its own network namespace
# (cm-swarm-1..3, wired to a bridge in a fourth namespace cm-swarm-hub on 10.231.78.0/24),
# with its own data root, exec root, pidfile, cgroup parent and socket. The root namespace
# gets one veth into the hub (cmswarm-root, 10.231.78.1/24: only its own connected route), so
# the server and the tests reach the nodes' TCP endpoints and host-mode ports as a client on
# the cluster's network would; the main daemon, the root namespace's other interfaces, routes
# and iptables are never touched. Every node shares this
# machine's filesystem: that stands in for the shared storage (NFS) a real cluster needs for
# `/app` (README "Swarm backend").
#
#   scripts/setup-swarm.sh              start what is missing, swarm init/join, labels, images (idempotent)
#   scripts/setup-swarm.sh stop         stop the nodes (by their pid files), remove namespaces and state
#   scripts/setup-swarm.sh kill N       SIGKILL node N's dockerd (its containerd keeps running), for node-loss tests
#   scripts/setup-swarm.sh restart N    start node N's dockerd again after a kill
#   scripts/setup-swarm.sh cut N        take node N's link down (its daemon runs on, unreachable
#                                       from the others: a node cut off), for node-loss tests
#   scripts/setup-swarm.sh uncut N      bring node N's link up again (a plain setup does too)
#   scripts/setup-swarm.sh env          print the settings a server needs (BACKEND, DOCKER_HOST, SWARM_NODES)
#   scripts/setup-swarm.sh env tls      the same through the nodes' TLS endpoints (tcp://10.231.78.1N:2376)
#
# The lab registry: a second docker-registry serving the storage of the open test registry
# (scripts/setup-registry.sh, 127.0.0.1:5731) on 10.231.78.1:5731, the address the nodes
# reach the root namespace at. An image pushed from the host as 127.0.0.1:5731/NAME is pulled
# on the nodes as 10.231.78.1:5731/NAME (same blobs, same digests); the nodes' daemon.json
# lists it in insecure-registries (plain HTTP; a setting dockerd reloads on SIGHUP, so a lab
# started before it only gets a SIGHUP). Without docker-registry installed it is left out.
#
# Node N: hostname (= Swarm node name) cm-swarm-N, socket unix:///run/cm-swarm/N.sock, label
# zone=a|b|c, address 10.231.78.1N, and tcp://10.231.78.1N:2376 with --tlsverify (Docker's
# mutual TLS). $RUN/tls (made once with openssl): ca.pem (the lab's CA), nodeN/ (node N's
# server certificate, SAN its address and name), client/ (ca.pem, cert.pem, key.pem: what
# DOCKER_CERT_PATH names) and rogue/ (a client certificate of another CA, for tests of a
# refused one). Node 1 is the only manager (--dispatcher-heartbeat 1s, so a
# dead worker is Down in 3-4 s). Logs: /var/log/cm-swarm/. Kernel limits seen here: no IPVS, so
# services use endpoint_mode dnsrr and host-mode ports.
set -euo pipefail

NODES="1 2 3"
ZONES=(x a b c)
RUN=/run/cm-swarm
DATA=/var/lib/cm-swarm
LOGDIR=/var/log/cm-swarm
HUB=cm-swarm-hub
BRIDGE=cmswarm0
NET=10.231.78
ROOT_LINK=cmswarm-root
IMAGES="cm-test-busybox:latest"
TEST_LABEL=com.container-manager.tag=test
REGISTRY_PORT=${CM_TEST_REGISTRY_PORT:-5731}
REGISTRY_STORE=/var/lib/cm-test-registry/open
TLS=$RUN/tls
TLS_PORT=2376

log() { echo "[setup-swarm] $*"; }
die() { echo "[setup-swarm] ERROR: $*" >&2; exit 1; }
sock() { echo "$RUN/$1.sock"; }
dn() { local n=$1; shift; docker -H "unix://$(sock "$n")" "$@"; }
node_ip() { echo "$NET.$((10 + $1))"; }
has_ns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
# is_ours PID SUBSTRING: the process is alive and its command line names SUBSTRING
is_ours() { [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"; }
up() { dn "$1" info >/dev/null 2>&1; }

# The daemons outlive this script: no descriptor it inherited may stay open in them. A caller's
# `flock /run/cm-lab.lock scripts/setup-swarm.sh` lock would otherwise be held by a node's
# dockerd for as long as it runs, and every later `flock` on the lab would wait forever.
close_inherited() {
    local fd
    for fd in /proc/$$/fd/*; do
        fd=${fd##*/}
        case $fd in 0 | 1 | 2 | 255) ;; *) eval "exec $fd>&-" 2>/dev/null || true ;; esac
    done
}
# What every node's dockerd reads (also on SIGHUP).
daemon_json() { echo "{\"insecure-registries\": [\"$NET.1:$REGISTRY_PORT\"]}"; }

# Runs inside `ip netns exec cm-swarm-N unshare --uts` (or nsenter into a surviving
# containerd's namespaces): containerd unless it still runs, then dockerd (exec). containerd
# and dockerd must share one mount namespace; `ip netns exec` remounts /sys, so the host's
# cgroup mounts are made again first.
inside() {
    local n=$1 exec_root=$RUN/$1 c
    close_inherited
    hostname "cm-swarm-$n"
    # cgroup v1: a tmpfs holding one mount per controller; v2: the list has /sys/fs/cgroup itself.
    if ! mountpoint -q /sys/fs/cgroup && ! grep -q '^/sys/fs/cgroup ' "$RUN/cgroup-mounts.txt"; then
        mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    fi
    while read -r mp fstype opts; do
        mountpoint -q "$mp" && continue
        mkdir -p "$mp"
        mount -t "$fstype" -o "$opts" "$fstype" "$mp"
    done <"$RUN/cgroup-mounts.txt"
    c=$(cat "$exec_root/containerd.pid" 2>/dev/null || true)
    if ! is_ours "$c" "$exec_root/containerd.toml"; then
        cat >"$exec_root/containerd.toml" <<TOML
version = 2
root = "$DATA/$n/containerd"
state = "$exec_root/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$exec_root/containerd/containerd.sock"
[ttrpc]
  address = "$exec_root/containerd/containerd.sock.ttrpc"
TOML
        containerd --config "$exec_root/containerd.toml" >>"$LOGDIR/$n-containerd.log" 2>&1 &
        echo $! >"$exec_root/containerd.pid"
    fi
    for _ in $(seq 100); do [ -S "$exec_root/containerd/containerd.sock" ] && break; sleep 0.1; done
    daemon_json >"$exec_root/daemon.json"
    exec dockerd --config-file "$exec_root/daemon.json" \
        --data-root "$DATA/$n" --exec-root "$exec_root" --pidfile "$RUN/$n.pid" \
        -H "unix://$(sock "$n")" --containerd "$exec_root/containerd/containerd.sock" \
        -H "tcp://$(node_ip "$n"):$TLS_PORT" --tlsverify --tlscacert "$TLS/ca.pem" \
        --tlscert "$TLS/node$n/cert.pem" --tlskey "$TLS/node$n/key.pem" \
        --bip "172.29.$n.1/24" --cgroup-parent "cm-swarm-$n" >>"$LOGDIR/$n-dockerd.log" 2>&1
}

# The lab's certificates (once; kept until `stop`): a CA, a server certificate per node, a
# client certificate, and a client certificate of another CA (rogue/).
make_tls() {
    local n d
    mkdir -p "$TLS"
    chmod 700 "$TLS"
    # cert NAME DIR CA_DIR EXTENSIONS: DIR/key.pem and DIR/cert.pem signed by CA_DIR's CA.
    cert() {
        [ -s "$2/cert.pem" ] && return 0
        mkdir -p "$2"
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
            -keyout "$2/key.pem" -out "$2/req.pem" 2>/dev/null
        printf '%s\n' "$4" >"$2/ext.cnf"
        openssl x509 -req -in "$2/req.pem" -CA "$3/ca.pem" -CAkey "$3/ca-key.pem" -CAcreateserial \
            -days 3650 -extfile "$2/ext.cnf" -out "$2/cert.pem" 2>/dev/null
        rm -f "$2/req.pem" "$2/ext.cnf"
    }
    for d in "$TLS" "$TLS/rogue-ca"; do
        [ -s "$d/ca.pem" ] && continue
        mkdir -p "$d"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=cm-swarm lab CA $(basename "$d")" -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null
    done
    for n in $NODES; do
        cert "cm-swarm-$n" "$TLS/node$n" "$TLS" \
            "subjectAltName=IP:$(node_ip "$n"),DNS:cm-swarm-$n
extendedKeyUsage=serverAuth"
    done
    cert client "$TLS/client" "$TLS" "extendedKeyUsage=clientAuth"
    cert rogue "$TLS/rogue" "$TLS/rogue-ca" "extendedKeyUsage=clientAuth"
    # A client's directory holds the CA that signed the daemons' certificates.
    cp "$TLS/ca.pem" "$TLS/client/ca.pem"
    cp "$TLS/ca.pem" "$TLS/rogue/ca.pem"
    chmod -R go-rwx "$TLS"
}

wait_up() {
    for _ in $(seq 300); do up "$1" && return 0; sleep 0.1; done
    tail -20 "$LOGDIR/$1-dockerd.log" >&2
    die "dockerd of node $1 did not come up (see $LOGDIR/$1-dockerd.log)"
}

# Starts node N's dockerd: inside the namespaces of its containerd when that survived a kill
# (they must share one mount namespace), else fresh in its network namespace.
start_node() {
    local n=$1 c
    mkdir -p "$RUN/$n/containerd" "$DATA/$n"
    c=$(cat "$RUN/$n/containerd.pid" 2>/dev/null || true)
    if is_ours "$c" "$RUN/$n/containerd.toml"; then
        setsid nsenter -t "$c" -m -n -u bash "$SELF" __inside "$n" </dev/null >/dev/null 2>&1 &
    else
        setsid ip netns exec "cm-swarm-$n" unshare --uts bash "$SELF" __inside "$n" </dev/null >/dev/null 2>&1 &
    fi
}

kill_node() {
    local n=$1 p
    p=$(cat "$RUN/$n.pid" 2>/dev/null || true)
    is_ours "$p" "$(sock "$n")" || die "node $n's dockerd is not running"
    kill -KILL "$p"
    for _ in $(seq 100); do [ -d "/proc/$p" ] || break; sleep 0.05; done
    rm -f "$(sock "$n")"
    log "killed dockerd of node $n (pid $p)"
}

stop() {
    local n p c f
    for n in $NODES; do
        p=$(cat "$RUN/$n.pid" 2>/dev/null || true)
        if is_ours "$p" "$(sock "$n")"; then
            dn "$n" swarm leave --force >/dev/null 2>&1 || true
            kill -TERM "$p"
            for _ in $(seq 150); do [ -d "/proc/$p" ] || break; sleep 0.2; done
            [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true
            log "stopped dockerd of node $n"
        fi
        c=$(cat "$RUN/$n/containerd.pid" 2>/dev/null || true)
        if is_ours "$c" "$RUN/$n/containerd.toml"; then
            kill -TERM "$c"
            for _ in $(seq 50); do [ -d "/proc/$c" ] || break; sleep 0.2; done
            [ -d "/proc/$c" ] && kill -KILL "$c" 2>/dev/null || true
        fi
    done
    # Whatever is left in our namespaces (shims, container processes) was started here.
    for ns in $HUB cm-swarm-1 cm-swarm-2 cm-swarm-3; do
        has_ns "$ns" || continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    done
    for f in /sys/fs/cgroup/pids/cm-swarm-[0-9]*/cgroup.procs /sys/fs/cgroup/cm-swarm-[0-9]*/cgroup.procs; do
        [ -f "$f" ] || continue
        for p in $(cat "$f"); do kill -KILL "$p" 2>/dev/null || true; done
    done
    for p in $(ls /proc | grep -E '^[0-9]+$'); do
        if { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qE -- "-address $RUN/[0-9]+/containerd/containerd.sock"; then
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    p=$(cat "$RUN/registry.pid" 2>/dev/null || true)
    if is_ours "$p" "$RUN/registry.yml"; then kill -TERM "$p" || true; fi
    ip link del $ROOT_LINK 2>/dev/null || true
    for ns in cm-swarm-1 cm-swarm-2 cm-swarm-3 $HUB; do
        has_ns "$ns" && { ip netns del "$ns" || true; }
    done
    # Mounts lived in the daemons' private mount namespaces; make sure of the root one.
    grep -E " ($DATA|$RUN)/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l || true
    for d in /sys/fs/cgroup/*/cm-swarm-[0-9]* /sys/fs/cgroup/cm-swarm-[0-9]*; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    rm -rf "$RUN" "$DATA"
    log "stopped"
}

env_out() {
    echo "BACKEND=swarm"
    if [ "${1:-}" = tls ]; then
        echo "DOCKER_HOST=tcp://$(node_ip 1):$TLS_PORT"
        echo "DOCKER_TLS_VERIFY=1"
        echo "DOCKER_CERT_PATH=$TLS/client"
        echo "SWARM_NODES=cm-swarm-1=tcp://$(node_ip 1):$TLS_PORT,cm-swarm-2=tcp://$(node_ip 2):$TLS_PORT,cm-swarm-3=tcp://$(node_ip 3):$TLS_PORT"
        return
    fi
    echo "DOCKER_HOST=unix://$(sock 1)"
    echo "SWARM_NODES=cm-swarm-1=unix://$(sock 1),cm-swarm-2=unix://$(sock 2),cm-swarm-3=unix://$(sock 3)"
}

SELF=$(readlink -f "$0")
case "${1:-}" in
    __inside) inside "$2"; exit ;;
    stop) stop; exit ;;
    kill) kill_node "$2"; exit ;;
    restart) up "$2" || { start_node "$2"; wait_up "$2"; }; log "node $2 up"; exit ;;
    cut) ip -n "cm-swarm-$2" link set eth0 down; log "node $2 cut off"; exit ;;
    uncut) ip -n "cm-swarm-$2" link set eth0 up; log "node $2 linked again"; exit ;;
    env) env_out "${2:-}"; exit ;;
    "") ;;
    *) echo "usage: $0 [stop | kill N | restart N | cut N | uncut N | env [tls]]" >&2; exit 2 ;;
esac

[ "$(id -u)" -eq 0 ] || die "must run as root"
for tool in ip:iproute2 nsenter:util-linux unshare:util-linux openssl:openssl curl:curl; do
    if ! command -v "${tool%%:*}" >/dev/null; then
        log "installing ${tool##*:}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool##*:}" >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tool##*:}" >/dev/null; } ||
            die "cannot install ${tool##*:}"
    fi
done
command -v containerd >/dev/null || die "containerd is missing (scripts/setup-docker.sh installs docker.io)"
docker info >/dev/null 2>&1 || die "the main Docker daemon is not running (scripts/setup-docker.sh)"
mkdir -p "$RUN" "$DATA" "$LOGDIR"

# ---------------------------------------------------------------- namespaces
if ! has_ns $HUB; then
    ip netns add $HUB
    ip -n $HUB link set lo up
    ip -n $HUB link add $BRIDGE type bridge
    ip -n $HUB link set $BRIDGE up
fi
if ! ip link show $ROOT_LINK >/dev/null 2>&1; then
    ip link add $ROOT_LINK type veth peer name cmswarm0-r netns $HUB
    ip -n $HUB link set cmswarm0-r master $BRIDGE up
    ip addr add "$NET.1/24" dev $ROOT_LINK
    ip link set $ROOT_LINK up
fi
for n in $NODES; do
    ns=cm-swarm-$n
    # A node a test cut off (`cut N`) is linked again.
    if has_ns "$ns"; then ip -n "$ns" link set eth0 up 2>/dev/null || true; continue; fi
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "cmswarm$n-h" netns $HUB type veth peer name eth0 netns "$ns"
    ip -n $HUB link set "cmswarm$n-h" master $BRIDGE up
    ip -n "$ns" addr add "$(node_ip "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
done

# ---------------------------------------------------------------- daemons
awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break; mp = $5; fs = $(i+1); so = $(i+3);
       if ((mp == "/sys/fs/cgroup" || mp ~ "^/sys/fs/cgroup/") && (fs == "cgroup" || fs == "cgroup2")) {
         sub(/^rw,/, "", so); if (so ~ /^name=/) so = "none," so; print mp, fs, so } }' \
    /proc/self/mountinfo >"$RUN/cgroup-mounts.txt"
make_tls
for n in $NODES; do
    # A daemon of an older lab (without the TLS endpoint), or one that lost its socket:
    # stopped, started again.
    p=$(cat "$RUN/$n.pid" 2>/dev/null || true)
    if is_ours "$p" "$(sock "$n")" && { ! up "$n" || ! is_ours "$p" "--tlsverify"; }; then
        log "restarting dockerd of node $n (with its TLS endpoint)"
        kill -TERM "$p"
        for _ in $(seq 150); do [ -d "/proc/$p" ] || break; sleep 0.2; done
        [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true
        rm -f "$(sock "$n")"
    fi
    up "$n" && continue
    log "starting dockerd of node $n (log: $LOGDIR/$n-dockerd.log)"
    start_node "$n"
done
for n in $NODES; do wait_up "$n"; done

# Nodes started before their daemon.json had what it has now: rewritten, and reloaded.
for n in $NODES; do
    want=$(daemon_json)
    [ "$(cat "$RUN/$n/daemon.json" 2>/dev/null)" = "$want" ] && continue
    p=$(cat "$RUN/$n.pid" 2>/dev/null || true)
    is_ours "$p" "$(sock "$n")" || continue
    echo "$want" >"$RUN/$n/daemon.json"
    kill -HUP "$p"
    log "node $n: daemon.json reloaded"
done

# ---------------------------------------------------------------- lab registry
registry_up() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$NET.1:$REGISTRY_PORT/v2/" || true)" = 200 ]; }
if registry_up; then
    :
elif ! command -v docker-registry >/dev/null; then
    log "no lab registry: docker-registry is not installed (scripts/setup-registry.sh installs it)"
else
    mkdir -p "$REGISTRY_STORE"
    cat >"$RUN/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $REGISTRY_STORE}
  delete: {enabled: true}
http: {addr: "$NET.1:$REGISTRY_PORT"}
YML
    log "starting the lab registry on $NET.1:$REGISTRY_PORT (log: $LOGDIR/registry.log)"
    (close_inherited; exec setsid docker-registry serve "$RUN/registry.yml" >>"$LOGDIR/registry.log" 2>&1 </dev/null) &
    echo $! >"$RUN/registry.pid"
    for _ in $(seq 100); do registry_up && break; sleep 0.1; done
    registry_up || { tail -n 20 "$LOGDIR/registry.log" >&2; die "the lab registry did not answer on $NET.1:$REGISTRY_PORT"; }
fi

# ---------------------------------------------------------------- swarm
if [ "$(dn 1 info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    log "swarm init on node 1"
    dn 1 swarm init --advertise-addr "$(node_ip 1)" --listen-addr "$(node_ip 1):2377" \
        --dispatcher-heartbeat 1s >/dev/null
fi
token=$(dn 1 swarm join-token -q worker)
for n in $NODES; do
    [ "$n" = 1 ] && continue
    state=$(dn "$n" info --format '{{.Swarm.LocalNodeState}}')
    if [ "$state" != active ]; then
        [ "$state" = inactive ] || dn "$n" swarm leave --force >/dev/null 2>&1 || true
        log "node $n joins"
        dn "$n" swarm join --token "$token" --advertise-addr "$(node_ip "$n")" \
            --listen-addr "$(node_ip "$n"):2377" "$(node_ip 1):2377" >/dev/null
    fi
done
# Nodes that left (an earlier lab's) stay listed as down: removed, so names stay unique.
# Never one of this lab's own daemons: one just restarted is down until its agent reports.
ours=" $(for n in $NODES; do dn "$n" info --format '{{.Swarm.NodeID}}' 2>/dev/null || true; done | tr '\n' ' ') "
for id in $(dn 1 node ls -q); do
    case $ours in *" $id "*) continue ;; esac
    if [ "$(dn 1 node inspect "$id" --format '{{.Status.State}}')" = down ]; then
        dn 1 node rm --force "$id" >/dev/null 2>&1 || true
    fi
done
for _ in $(seq 100); do
    [ "$(dn 1 node ls --format '{{.Status}}' | grep -c Ready)" = 3 ] && break
    sleep 0.1
done
[ "$(dn 1 node ls --format '{{.Status}}' | grep -c Ready)" = 3 ] || { dn 1 node ls >&2; die "not 3 nodes ready"; }
for n in $NODES; do
    dn 1 node update --label-add "zone=${ZONES[$n]}" "cm-swarm-$n" >/dev/null
done

# ---------------------------------------------------------------- images
for img in $IMAGES; do
    want=$(docker image inspect --format '{{.Id}}' "$img" 2>/dev/null) || die "$img is missing (scripts/setup-docker.sh builds it)"
    tar=""
    for n in $NODES; do
        have=$(dn "$n" image inspect --format '{{.Id}}' "$img" 2>/dev/null || true)
        [ "$want" = "$have" ] && continue
        if [ -z "$tar" ]; then
            tar=$RUN/image.tar
            docker save "$img" -o "$tar"
        fi
        log "loading $img into node $n"
        dn "$n" load -q -i "$tar" >/dev/null
    done
    [ -z "$tar" ] || rm -f "$tar"
done

# ---------------------------------------------------------------- leftovers
ids=$(dn 1 service ls -q --filter "label=$TEST_LABEL")
[ -z "$ids" ] || dn 1 service rm $ids >/dev/null
log "ready: $(dn 1 node ls --format '{{.Hostname}}={{.Status}}' | tr '\n' ' ')"
