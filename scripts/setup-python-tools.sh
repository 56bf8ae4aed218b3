#!/usr/bin/env bash
# Python tools the test suite runs (schemathesis fuzzes the API against its own OpenAPI
# document), in a virtual environment of their own so the system Python stays untouched.
# Idempotent and fast when the pinned version is already there.
set -euo pipefail
VENV="${CM_PY_VENV:-/opt/cm-venv}"
SCHEMATHESIS_VERSION="4.32.5"
if [ -x "$VENV/bin/st" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt-get install -y python3-venv >/dev/null
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
"$VENV/bin/st" --version
