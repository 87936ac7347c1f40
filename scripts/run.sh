#!/usr/bin/env bash
# Set up .venv (once) and run ollamaproxy: `scripts/run.sh [COMMAND ARGS...]`, default `demo`.
# As root on Debian/Ubuntu it installs python3-venv when the interpreter lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "==> installing python3-venv" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        else
            echo "scripts/run.sh: '$PYTHON -m venv' is unavailable; install python3-venv" >&2
            exit 1
        fi
    fi
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || { echo "scripts/run.sh: ollamaproxy needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
    echo "==> creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c 'import ollamaproxy, aiohttp, pydantic' >/dev/null 2>&1 \
        || [ pyproject.toml -nt .venv/.installed ]; then
    echo "==> installing ollamaproxy (with the demo's llama.cpp) into .venv" >&2
    out=$(.venv/bin/python -m pip install -q -e '.[demo]' 2>&1) || { printf '%s\n' "$out" >&2; exit 1; }
    touch .venv/.installed
fi
[ "$#" -gt 0 ] || set -- demo
exec .venv/bin/ollamaproxy "$@"
