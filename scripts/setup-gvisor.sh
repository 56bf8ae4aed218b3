#!/usr/bin/env bash
# Makes gVisor available to containers with `"isolation": "gvisor"` (Debian 12, run as root,
# after scripts/setup-docker.sh):
#   - Debian's `runsc` package (release 2022-12-19) from apt
#   - the runtime `runsc` registered with the main Docker daemon in /etc/docker/daemon.json,
#     with `runtimeArgs: ["--network=host", "--platform=ptrace"]`: plain `runsc` refuses to
#     start (`cannot run with network enabled in root network namespace`); with
#     `--network=host` the sandbox uses the container's own network namespace through the
#     host kernel's stack; `ptrace` is the platform this release has that works without KVM.
#   - the daemon reloaded with SIGHUP (never restarted) until `docker info` lists `runsc`.
# A daemon started with `--config-file` elsewhere reads another file: set DAEMON_JSON.
# The file is merged, never rewritten: every other key the daemon's settings have (and every
# other runtime) is kept. `default-runtime` is not touched.
# Idempotent: when `runsc` is installed and registered it only checks.
set -euo pipefail

RUNTIME=runsc
DAEMON_JSON=${DAEMON_JSON:-/etc/docker/daemon.json}

export DEBIAN_FRONTEND=noninteractive
log() { echo "[setup-gvisor] $*"; }
die() { echo "[setup-gvisor] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (run scripts/setup-docker.sh first)"

registered() {
    docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q "\"$RUNTIME\""
}

# ---------------------------------------------------------------- runsc
if ! command -v runsc >/dev/null 2>&1; then
    log "apt-get install runsc"
    if ! apt-get install -y -qq --no-install-recommends runsc >/dev/null 2>&1; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends runsc >/dev/null || die "apt-get install runsc failed"
    fi
    hash -r
fi
RUNSC_PATH=$(command -v runsc) || die "runsc missing after installing it"
log "runsc: $RUNSC_PATH ($(runsc --version 2>/dev/null | head -n 1))"

# ---------------------------------------------------------------- daemon.json
command -v python3 >/dev/null 2>&1 || die "python3 is needed to merge $DAEMON_JSON"
mkdir -p "$(dirname "$DAEMON_JSON")"
# Prints "changed" when the file had to be written. Written through a temporary file in the
# same directory and renamed, so a crash never leaves the daemon a half-written file.
changed=$(python3 - "$DAEMON_JSON" "$RUNTIME" "$RUNSC_PATH" <<'PY'
import json, os, sys
path, name, runsc = sys.argv[1:4]
try:
    with open(path) as f:
        text = f.read()
    conf = json.loads(text) if text.strip() else {}
except FileNotFoundError:
    conf = {}
if not isinstance(conf, dict):
    sys.exit(f"{path} is not a JSON object")
want = {"path": runsc, "runtimeArgs": ["--network=host", "--platform=ptrace"]}
runtimes = conf.setdefault("runtimes", {})
if runtimes.get(name) == want:
    print("unchanged")
    sys.exit(0)
runtimes[name] = want
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(conf, f, indent=2, sort_keys=True)
    f.write("\n")
os.chmod(tmp, 0o644)
os.replace(tmp, path)
print("changed")
PY
) || die "could not merge $DAEMON_JSON"

if [ "$changed" = "changed" ] || ! registered; then
    # The main daemon: its pid file (other daemons on this machine, e.g. test daemons with
    # their own --pidfile and config, are not touched), else the oldest dockerd.
    pid=""
    if [ -r /var/run/docker.pid ]; then pid=$(cat /var/run/docker.pid); fi
    if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
        pid=$(pgrep -xo dockerd) || die "no dockerd process to reload"
    fi
    log "reloading dockerd (pid $pid) with SIGHUP"
    kill -HUP "$pid"
    for _ in $(seq 1 100); do
        registered && break
        sleep 0.1
    done
    registered || die "dockerd did not pick up the $RUNTIME runtime (see its log)"
fi
log "runtime $RUNTIME: registered ($(docker info --format '{{json .Runtimes}}'))"
