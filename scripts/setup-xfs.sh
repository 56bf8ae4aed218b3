#!/usr/bin/env bash
# xfsprogs (mkfs.xfs) for the reflink row of `cargo bench --bench snapshot`, which makes a
# loop-mounted XFS to compare snapshots against `cp --reflink=always`. Only the benchmark
# needs it (it skips that row with a message without it). Idempotent.
set -euo pipefail
if command -v mkfs.xfs >/dev/null 2>&1 || [ -x /usr/sbin/mkfs.xfs ] || [ -x /sbin/mkfs.xfs ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q xfsprogs >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q xfsprogs >/dev/null; }
/usr/sbin/mkfs.xfs -V
