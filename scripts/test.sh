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
# The three-node Swarm of tests/it/swarm.rs (about 5 s from nothing, ~300 MB while it runs):
# removed again when the suite ends unless KEEP_SWARM=1 (to run the swarm tests by hand).
# The trap is set first so a setup that fails halfway is cleaned up too; a failed clean-up is
# said, never turned into the suite's result.
if [ "${KEEP_SWARM:-0}" != 1 ]; then
    trap 'bash scripts/setup-swarm.sh stop >/dev/null || echo "setup-swarm.sh stop failed" >&2' EXIT
fi
bash scripts/setup-swarm.sh
# The lab is up: a Swarm test that finds it missing fails instead of skipping.
export CM_REQUIRE_SWARM_LAB=1
export SQLX_OFFLINE=true
cargo test --locked "$@"
