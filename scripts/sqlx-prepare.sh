#!/usr/bin/env bash
# Regenerates .sqlx/, sqlx's offline query data (the successor of sqlx 0.6's sqlx-data.json),
# without needing sqlx-cli: while compiling, sqlx's query macros check every query against a
# scratch database built from migrations/ and write what they learned to SQLX_OFFLINE_DIR.
# Run it after changing a query or a migration; CI builds with SQLX_OFFLINE=true from .sqlx/.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sqlite3 >/dev/null || apt-get install -y sqlite3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cat migrations/*.sql | sqlite3 "$scratch/prepare.db"
rm -rf .sqlx && mkdir .sqlx
find src tests -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="sqlite://$scratch/prepare.db" \
  cargo check --all-targets --locked
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
