#!/bin/bash
# A headless GNOME Shell 48 (Debian trixie chroot) with the ollamaproxy@fio.ie extension installed
# and enabled, for tests/test_extension_e2e.py (adapted from the desktop testkit's
# headless-shell.sh and e2e-extension.sh). Run as root on the host:
#
#   scripts/e2e-extension.sh up        build the chroot if needed (scripts/shell-chroot.sh, ~4 min
#                                      once), copy the extension sources in, then run `inside`
#                                      in it; stays in the foreground until SIGTERM/SIGINT
#   scripts/e2e-extension.sh busctl ARGS...
#                                      busctl --user ARGS against the test session bus, run
#                                      in the chroot (its systemd ships busctl)
#
# `inside` (run in the chroot by `up`) starts, all on private buses:
#   - a system bus with python-dbusmock's logind (gnome-shell 48 aborts without it) and UPower
#     (on mains power, one battery charging at 76 %)
#   - a session bus
#   - `gnome-extensions pack` + `gnome-extensions install` of the extension (the README's path),
#     before the shell starts, since the shell scans extension folders only at start-up
#   - gnome-shell --headless --wayland --no-x11 --virtual-monitor --unsafe-mode (Eval, Screenshot)
#   - `gnome-extensions enable ollamaproxy@fio.ie`
# then writes $E2E_DIR/ready. The buses' sockets lie in the chroot's $E2E_DIR (/run/e2e), so on
# the host they are $CHROOT/run/e2e/{bus,system}: the test runs the real service on the host,
# connected to these buses, and drives the shell through org.gnome.Shell.Eval.
#
# Env: OLLAMAPROXY_CHROOT (default /var/cache/ollamaproxy/trixie), SIZE (1280x800).
set -euo pipefail

CHROOT=${OLLAMAPROXY_CHROOT:-/var/cache/ollamaproxy/trixie}
E2E_DIR=/run/e2e                 # inside the chroot
SRC=/opt/ollamaproxy-e2e         # inside the chroot: the copied sources
UUID=ollamaproxy@fio.ie
here=$(cd "$(dirname "$0")" && pwd)

case "${1:-}" in
up)
    [ "$(id -u)" = 0 ] || { echo "e2e-extension.sh up needs root (debootstrap, chroot)" >&2; exit 1; }
    root=$(cd "$here/.." && pwd)
    bash "$root/scripts/shell-chroot.sh" build "$CHROOT"
    # the extension as the repository has it (node_modules and dist left out), the contract
    # and this script; `gnome-extension/build.sh install` then runs in the chroot
    rm -rf "${CHROOT:?}$SRC"
    mkdir -p "$CHROOT$SRC/gnome-extension" "$CHROOT$SRC/dbus" "$CHROOT$SRC/scripts"
    cp -r "$root/gnome-extension/$UUID" "$root/gnome-extension/build.sh" "$CHROOT$SRC/gnome-extension/"
    cp "$root/dbus/ie.fio.OllamaProxy.xml" "$CHROOT$SRC/dbus/"
    cp "$0" "$CHROOT$SRC/scripts/e2e-extension.sh"
    exec bash "$root/scripts/shell-chroot.sh" run "$CHROOT" \
        env SIZE="${SIZE:-1280x800}" bash "$SRC/scripts/e2e-extension.sh" inside
    ;;
busctl)
    shift
    exec bash "$here/shell-chroot.sh" run "$CHROOT" \
        env DBUS_SESSION_BUS_ADDRESS="unix:path=$E2E_DIR/bus" busctl --user "$@"
    ;;
inside)
    ;;  # below
*)
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

# ---------------------------------------------------------------- inside the chroot
pids=()
# shellcheck disable=SC2317  # called from the traps
cleanup() {
    trap - EXIT INT TERM
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM
fail() { echo "e2e-extension.sh: $*" >&2; exit 1; }
log() { echo "e2e: $*"; }

export HOME=/root
rm -rf "$E2E_DIR" "$HOME/.local/share/gnome-shell" "$HOME/.config/dconf" "$HOME/.cache"
mkdir -p "$E2E_DIR"
# a fresh runtime dir every start: the shell creates gnome-shell-disable-extensions there at
# start-up and removes it only after ~60 s; left over, it disables user extensions
export XDG_RUNTIME_DIR=$E2E_DIR/xdg
mkdir -m 700 "$XDG_RUNTIME_DIR"

cat > "$E2E_DIR/system-bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$E2E_DIR/system</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$E2E_DIR/system-bus.conf" --nofork --nopidfile 2>"$E2E_DIR/system-bus.log" &
pids+=($!)
dbus-daemon --session --address="unix:path=$E2E_DIR/bus" --nofork --nopidfile 2>"$E2E_DIR/session-bus.log" &
pids+=($!)
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=$E2E_DIR/system
export DBUS_SESSION_BUS_ADDRESS=unix:path=$E2E_DIR/bus
for _ in $(seq 100); do [ -S "$E2E_DIR/system" ] && [ -S "$E2E_DIR/bus" ] && break; sleep 0.05; done
[ -S "$E2E_DIR/bus" ] || fail "the session bus did not start"

# stand-ins for the system services the shell talks to
python3 -m dbusmock --template logind >"$E2E_DIR/logind-mock.log" 2>&1 &
pids+=($!)
python3 -m dbusmock --template upower -p '{"OnBattery": false}' >"$E2E_DIR/upower-mock.log" 2>&1 &
pids+=($!)
for name in org.freedesktop.login1 org.freedesktop.UPower; do
    gdbus wait --system --timeout 20 "$name" || fail "mock $name did not start (see $E2E_DIR/*-mock.log)"
done
# the logind template has no users; the shell asks for its own uid
gdbus call --system --dest org.freedesktop.login1 --object-path /org/freedesktop/login1 \
    --method org.freedesktop.DBus.Mock.AddUser "uint32 $(id -u)" "$(id -un)" true >/dev/null
# a laptop on mains power with its battery charging at 76 %
upower_mock() {
    gdbus call --system --dest org.freedesktop.UPower --object-path /org/freedesktop/UPower \
        --method "org.freedesktop.DBus.Mock.$1" "${@:2}" >/dev/null
}
upower_mock AddChargingBattery mock_BAT "Mock Battery" 76.0 1200
upower_mock SetupDisplayDevice 2 1 76.0 38.0 50.0 10.0 0 1200 true battery-level-80-charging-symbolic 1

# install the extension the documented way, before the shell starts
bash "$SRC/gnome-extension/build.sh" install >"$E2E_DIR/install.log" 2>&1 \
    || { cat "$E2E_DIR/install.log" >&2; fail "extension install failed"; }
log "$(tail -1 "$E2E_DIR/install.log")"

t0=$(date +%s%N)
XDG_SESSION_TYPE=wayland gnome-shell --headless --wayland --no-x11 \
    --virtual-monitor "${SIZE:-1280x800}" --unsafe-mode >"$E2E_DIR/shell.log" 2>&1 &
shell_pid=$!
pids+=("$shell_pid")
# org.gnome.Shell is owned early; the Extensions interface answers once the UI is up
gdbus wait --session --timeout 120 org.gnome.Shell || fail "gnome-shell did not start (see shell.log)"
up=0
for _ in $(seq 600); do
    if gdbus call --session --dest org.gnome.Shell --object-path /org/gnome/Shell \
        --method org.freedesktop.DBus.Properties.Get org.gnome.Shell.Extensions ShellVersion \
        >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$shell_pid" 2>/dev/null || break
    sleep 0.2
done
[ "$up" = 1 ] || { tail -30 "$E2E_DIR/shell.log" >&2; fail "gnome-shell did not come up"; }
log "gnome-shell $(gnome-shell --version | awk '{print $3}') up in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

gnome-extensions enable "$UUID" || fail "gnome-extensions enable $UUID failed"
printf 'session=unix:path=%s/bus\nsystem=unix:path=%s/system\n' "$E2E_DIR" "$E2E_DIR" > "$E2E_DIR/ready"
log "ready"

# until the test is done with us (SIGTERM), or the shell dies
wait "$shell_pid" || true
fail "gnome-shell exited (see $E2E_DIR/shell.log)"
