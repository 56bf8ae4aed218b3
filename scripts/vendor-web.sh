#!/usr/bin/env bash
# Regenerates web/vendor/ from the npm registry: the console's third-party browser code at
# pinned versions, with its license. Run by hand when bumping a version; the files are
# committed, so neither the build nor the server ever fetches anything.
# Also regenerates tests/vendor/: axe-core, which only the browser tests inject (it is kept
# outside web/ so the server never embeds or serves it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

XTERM_VERSION=6.0.0
FIT_VERSION=0.11.0
AXE_VERSION=4.10.3

out=web/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # package version dir
    local url
    url=$(npm view "$1@$2" dist.tarball)
    case "$url" in
        https://registry.npmjs.org/*) ;;
        *) echo "unexpected tarball URL: $url" >&2; exit 1 ;;
    esac
    mkdir -p "$tmp/$3"
    curl -fsSL "$url" | tar -xz -C "$tmp/$3"
}

fetch @xterm/xterm "$XTERM_VERSION" xterm
fetch @xterm/addon-fit "$FIT_VERSION" fit
fetch axe-core "$AXE_VERSION" axe

rm -rf "$out"
mkdir -p "$out"
cp "$tmp/xterm/package/lib/xterm.js" "$out/xterm.js"
cp "$tmp/xterm/package/css/xterm.css" "$out/xterm.css"
cp "$tmp/xterm/package/LICENSE" "$out/xterm.LICENSE"
cp "$tmp/fit/package/lib/addon-fit.js" "$out/addon-fit.js"
cp "$tmp/fit/package/LICENSE" "$out/addon-fit.LICENSE"
cat > "$out/VERSIONS" <<VERSIONS
@xterm/xterm $XTERM_VERSION
@xterm/addon-fit $FIT_VERSION
VERSIONS
echo "vendored into $out:" && ls -l "$out"

tests=tests/vendor
rm -rf "$tests"
mkdir -p "$tests"
cp "$tmp/axe/package/axe.min.js" "$tests/axe.min.js"
cp "$tmp/axe/package/LICENSE" "$tests/axe.LICENSE"
cat > "$tests/VERSIONS" <<VERSIONS
axe-core $AXE_VERSION
VERSIONS
echo "vendored into $tests:" && ls -l "$tests"
