#!/usr/bin/env bash
# The first command on a new machine: prepares what the server needs here (the Docker daemon
# and the compose plugin; run as root on Debian 12, as scripts/setup-docker.sh explains),
# then builds and starts the server. With no credentials configured, the first start makes
# a password, stores it in .env (mode 0600) and prints the user, the password and the
# address once. Extra arguments go to the server's `cargo run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-docker.sh --server-only
# gVisor is optional: installed and registered with the daemon only when asked for
# (SETUP_GVISOR=1, or DEFAULT_ISOLATION=gvisor in the environment or .env).
if [ "${SETUP_GVISOR:-0}" = 1 ] || [ "${DEFAULT_ISOLATION:-}" = gvisor ] \
    || { [ -f .env ] && grep -qE '^[[:space:]]*DEFAULT_ISOLATION=["'\'']?gvisor' .env; }; then
    bash scripts/setup-gvisor.sh
fi
export SQLX_OFFLINE=true
exec cargo run --release --locked -- "$@"
