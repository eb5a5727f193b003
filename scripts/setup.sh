#!/usr/bin/env bash
# Everything lockgate needs on a fresh Debian 12 machine, as root: Debian
# packages from scripts/apt-packages.txt, then .venv with the pinned Python
# dependencies (constraints.txt) and lockgate itself as an editable install.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
want=$(grep -v -e '^#' -e '^$' scripts/apt-packages.txt)
missing=()
for pkg in $want; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: need root to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.lockgate-setup
log=.venv/setup.log
# pip, quietly: its build tools' chatter goes to $log, shown if a step fails
pip() {
    if ! .venv/bin/python -m pip "$@" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup: pip $* failed (whole log: $log)" >&2
        exit 1
    fi
}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ constraints.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ] \
        || [ setup.py -nt "$stamp" ] || [ scripts/layout.py -nt "$stamp" ]; then
    echo "setup: installing Python dependencies (pinned by constraints.txt)"
    # The build tools first, pinned, then lockgate built with them (no isolated
    # build environment: that one would not be pinned). mypy brings mypyc.
    : >"$log"
    pip install -q --upgrade -c constraints.txt pip setuptools wheel mypy
    echo "setup: installing lockgate, compiling the proxy core (LOCKGATE_COMPILE=0: skip)"
    pip install -q --no-build-isolation -c constraints.txt -e '.[dev]'
    touch "$stamp"
fi
# Compiled modules sit beside their sources and win at import: one older than
# its source would hide the edit, one left after LOCKGATE_COMPILE=0 would too.
stale=$(.venv/bin/python scripts/layout.py stale)
if [ -n "$stale" ]; then
    if [ "${LOCKGATE_COMPILE:-1}" = 0 ]; then
        echo "setup: removing compiled modules (LOCKGATE_COMPILE=0):" $stale
        rm -f $stale
    else
        echo "setup: compiling the proxy core again (changed:" $stale")"
        pip install -q --no-build-isolation --no-deps -c constraints.txt -e .
    fi
fi
# Azurite, the Azure blob emulator of the publish tests, from npm, pinned by
# tests/emulators/package-lock.json. Debian's npm comes apart from nodejs (a
# NodeSource nodejs carries its own, which Debian's npm package conflicts with).
if ! command -v npm >/dev/null; then
    echo "setup: installing npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
emulators=tests/emulators
if [ ! -f "$emulators/node_modules/.lockgate-setup" ] \
        || [ "$emulators/package-lock.json" -nt "$emulators/node_modules/.lockgate-setup" ]; then
    echo "setup: installing Azurite (npm ci in $emulators)"
    if ! (cd "$emulators" && npm ci --no-audit --no-fund --ignore-scripts) >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "setup: npm ci in $emulators failed (whole log: $log)" >&2
        exit 1
    fi
    touch "$emulators/node_modules/.lockgate-setup"
fi
echo "setup: ready ($(.venv/bin/lockgate --version))"
