#!/usr/bin/env bash
# The one command for the whole test suite: prepares Docker, then runs cargo test.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -- --nocapture).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-docker.sh
bash scripts/setup-gvisor.sh
bash scripts/setup-userns-daemon.sh
bash scripts/setup-registry.sh
bash scripts/setup-python-tools.sh
bash scripts/setup-browser.sh
export SQLX_OFFLINE=true
exec cargo test --locked "$@"
