#!/usr/bin/env bash
# Local image registries for the image tests (Debian 12, run as root, no network needed once
# the packages are installed):
#   - an open registry on 127.0.0.1:$OPEN_PORT
#   - a registry with htpasswd (bcrypt) auth on 127.0.0.1:$AUTH_PORT, user $REG_USER
#   - cm-test-busybox:latest pushed to both (so a test can check a pull end to end)
#   - $STATE/docker-config/config.json: a Docker config with the right credentials for the
#     auth registry (tests push with DOCKER_CONFIG=$STATE/docker-config, never touching the
#     operator's ~/.docker)
# Idempotent: when both registries answer and hold the image it only checks (well under 1 s).
# Needs scripts/setup-docker.sh to have run (daemon up, cm-test-busybox built).
set -euo pipefail

OPEN_PORT=${CM_TEST_REGISTRY_PORT:-5731}
AUTH_PORT=${CM_TEST_AUTH_REGISTRY_PORT:-5732}
REG_USER=cm-test
REG_PASS=cm-test-registry-pass
STATE=/var/lib/cm-test-registry
IMAGE=cm-test-busybox:latest

export DEBIAN_FRONTEND=noninteractive

log() { echo "[registry] $*"; }
die() { echo "[registry] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
docker info >/dev/null 2>&1 || die "the docker daemon is not running (run scripts/setup-docker.sh)"

apt_install() {
    log "apt-get install $*"
    if ! apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
    fi
}

command -v docker-registry >/dev/null 2>&1 || apt_install docker-registry
command -v htpasswd >/dev/null 2>&1 || apt_install apache2-utils
hash -r

mkdir -p "$STATE/open" "$STATE/auth" "$STATE/docker-config"
chmod 0700 "$STATE"

# A bcrypt htpasswd entry (the registry accepts nothing else), written once.
if ! htpasswd -vb "$STATE/htpasswd" "$REG_USER" "$REG_PASS" >/dev/null 2>&1; then
    htpasswd -Bbc "$STATE/htpasswd" "$REG_USER" "$REG_PASS" >/dev/null 2>&1 || die "htpasswd failed"
fi

write_config() { # name port [auth]
    local file="$STATE/$1.yml"
    {
        echo "version: 0.1"
        echo "log: {level: warn}"
        echo "storage:"
        echo "  filesystem: {rootdirectory: $STATE/$1}"
        echo "  delete: {enabled: true}"
        echo "http: {addr: 127.0.0.1:$2}"
        if [ "${3:-}" = auth ]; then
            echo "auth:"
            echo "  htpasswd: {realm: cm-test, path: $STATE/htpasswd}"
        fi
    } >"$file.tmp"
    mv -f "$file.tmp" "$file"
}

# HTTP status of GET /v2/ (000 when nothing listens).
v2_status() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/v2/" || true; }

start_registry() { # name port want_status [auth]
    local name=$1 port=$2 want=$3
    if [ "$(v2_status "$port")" = "$want" ]; then
        log "$name registry on 127.0.0.1:$port: running"
        return
    fi
    write_config "$name" "$port" "${4:-}"
    log "starting the $name registry on 127.0.0.1:$port (log: $STATE/$name.log)"
    setsid nohup docker-registry serve "$STATE/$name.yml" >>"$STATE/$name.log" 2>&1 </dev/null &
    disown || true
    for _ in $(seq 1 100); do
        [ "$(v2_status "$port")" = "$want" ] && return
        sleep 0.1
    done
    tail -n 20 "$STATE/$name.log" >&2 || true
    die "the $name registry did not answer $want on 127.0.0.1:$port"
}

start_registry open "$OPEN_PORT" 200
start_registry auth "$AUTH_PORT" 401 auth

# The auth registry's credentials, as `docker login` would store them.
auth=$(printf '%s:%s' "$REG_USER" "$REG_PASS" | base64 -w0)
printf '{"auths":{"127.0.0.1:%s":{"auth":"%s"}}}\n' "$AUTH_PORT" "$auth" >"$STATE/docker-config/config.json.tmp"
chmod 0600 "$STATE/docker-config/config.json.tmp"
mv -f "$STATE/docker-config/config.json.tmp" "$STATE/docker-config/config.json"

docker image inspect "$IMAGE" >/dev/null 2>&1 || die "$IMAGE is missing (run scripts/setup-docker.sh)"
push() { # port
    local ref="127.0.0.1:$1/$IMAGE"
    local tags
    tags=$(curl -s -u "$REG_USER:$REG_PASS" "http://127.0.0.1:$1/v2/${IMAGE%%:*}/tags/list" || true)
    if [[ "$tags" == *'"latest"'* ]]; then
        log "$ref: present"
        return
    fi
    docker tag "$IMAGE" "$ref"
    DOCKER_CONFIG="$STATE/docker-config" docker push "$ref" >/dev/null || die "docker push $ref failed"
    # The host keeps only the source image: a test pulls the registry's copy itself.
    docker rmi "$ref" >/dev/null
    log "$ref: pushed"
}
push "$OPEN_PORT"
push "$AUTH_PORT"
log "registries ready"
