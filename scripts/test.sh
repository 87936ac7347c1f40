#!/usr/bin/env bash
# THE test command: sets up everything the suite needs on a fresh Debian 12 / Ubuntu
# machine, then runs pytest. Reruns are fast (every step checks before it acts).
#
#   scripts/test.sh [PYTEST ARGS...]     (default: -q -ra)
#
# Steps:
#   1. as root with apt-get: install the Debian packages below that are missing
#      (apt-get update only when something is missing); otherwise just list them;
#   2. create .venv with python3 (>= 3.11; override with PYTHON=/path/to/python3)
#      if absent, then `pip install -e '.[test]'`;
#   3. fetch the SmolLM2 GGUF for the llama.cpp tests into
#      ${OLLAMAPROXY_MODEL_DIR:-$HOME/.cache/ollamaproxy/models} (exported);
#   4. run .venv/bin/python -m pytest and exit with its status.
set -euo pipefail

# Debian/Ubuntu packages the suite needs. Add new ones here.
#   dbus                        dbus-daemon for private test buses
#   libdbus-1-dev libglib2.0-dev pkg-config   build dbus-python (python-dbusmock)
#   curl                        scripts and manual checks
#   umockdev gir1.2-umockdev-1.0 python3-gi   udev discovery and hot-plug tests
#   systemd libglib2.0-bin            busctl and gdbus, as users type them; systemd --user lab
#   dbus-user-session util-linux      the systemd --user lab (unshare)
#   gcc python3-dev                   building dbus-python
#   gjs                               the GNOME extension's D-Bus client tests
#   nodejs npm                        eslint for the extension
APT_PACKAGES="dbus libdbus-1-dev libglib2.0-dev pkg-config curl umockdev gir1.2-umockdev-1.0 python3-gi
systemd libglib2.0-bin dbus-user-session util-linux gcc python3-dev gjs"
command -v node >/dev/null 2>&1 || APT_PACKAGES="$APT_PACKAGES nodejs npm"
# python3-venv is added when `python3 -m venv` is unavailable (Debian ships ensurepip
# separately) and .venv still has to be created.

MIN_PYTHON=3.11

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PYTHON=${PYTHON:-python3}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'scripts/test.sh: error: %s\n' "$*" >&2; exit 1; }

pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

need_venv=0
if [ ! -x "$VENV/bin/python" ]; then
    need_venv=1
fi

# --- 1. system packages ------------------------------------------------------------
if command -v dpkg >/dev/null 2>&1; then
    wanted=$APT_PACKAGES
    if [ "$need_venv" = 1 ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        wanted="python3-venv $wanted"
    fi
    missing=""
    for p in $wanted; do
        pkg_installed "$p" || missing="$missing $p"
    done
    missing=${missing# }
    if [ -n "$missing" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            say "installing Debian packages: $missing"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            # shellcheck disable=SC2086
            apt-get install -y -qq --no-install-recommends $missing >/dev/null
        else
            say "WARNING: missing Debian packages (not root, not installing): $missing"
            say "         install them with: sudo apt-get install $missing"
        fi
    fi
fi

# --- 2. virtualenv -----------------------------------------------------------------
check_python() {  # $1: interpreter; dies unless it is >= MIN_PYTHON
    "$1" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$MIN_PYTHON'.split('.'))))" \
        2>/dev/null && return 0
    local v
    v=$("$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null) || v="not runnable"
    die "$1 is Python $v; ollamaproxy needs Python >= $MIN_PYTHON (set PYTHON=/path/to/python3.11+)"
}

if [ "$need_venv" = 1 ]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python >= $MIN_PYTHON"
    check_python "$PYTHON"
    if [ -e "$VENV" ]; then
        say "$VENV has no working bin/python; recreating it"
        rm -rf "$VENV"
    fi
    say "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
else
    check_python "$VENV/bin/python"
fi

say "installing ollamaproxy[test] into .venv"
# pip -q still relays setuptools' build warnings; show pip's output only on failure.
if ! pip_out=$("$VENV/bin/python" -m pip install -q -e '.[test]' 2>&1); then
    printf '%s\n' "$pip_out" >&2
    die "pip install -e '.[test]' failed"
fi

# --- 3. model for the llama.cpp tests -----------------------------------------------
export OLLAMAPROXY_MODEL_DIR=${OLLAMAPROXY_MODEL_DIR:-$HOME/.cache/ollamaproxy/models}
bash scripts/fetch-model.sh "$OLLAMAPROXY_MODEL_DIR" "$VENV/bin/python"

# --- 4. tests ------------------------------------------------------------------------
if [ "$#" -eq 0 ]; then
    set -- -q -ra
fi
say "running pytest $*"
exec "$VENV/bin/python" -m pytest "$@"
