#!/bin/bash
# A Debian trixie chroot with GNOME Shell 48 for the extension's end-to-end test, built from a
# Debian 12 host as root (adapted from the desktop testkit's trixie-chroot.sh).
#
#   scripts/shell-chroot.sh build DIR      debootstrap trixie + gnome-shell + dbusmock (~4 min,
#                                          ~1.3 GB); a no-op when DIR is already complete
#   scripts/shell-chroot.sh run DIR CMD... run CMD inside DIR as root, with /proc, /sys and
#                                          /dev mounted in a private mount namespace: the
#                                          mounts vanish when CMD exits, so `rm -rf DIR` can
#                                          never reach the host's /dev or /sys
#
# DIR is complete when DIR/.ollamaproxy-chroot names the current package set; a build that
# was interrupted (or one made with another package set) is removed and redone.
# The Debian mirror is the host's own (MIRROR= overrides), so no other network is needed.
set -euo pipefail
cmd=${1:?usage: shell-chroot.sh build|run DIR ...}
dir=${2:?usage: shell-chroot.sh build|run DIR ...}
shift 2

# What the e2e test needs inside: the shell and its session pieces (gdbus, glib-compile-schemas
# and gnome-extensions come with gnome-shell), software GL, a font, python3-dbusmock for the
# logind and UPower stand-ins, zip/unzip for `gnome-extensions pack`/`install`.
PACKAGES="gnome-shell dbus-daemon dbus-bin libglib2.0-bin libgl1-mesa-dri libegl-mesa0
fonts-cantarell python3-dbusmock python3-gi zip unzip"
STAMP=.ollamaproxy-chroot
# shellcheck disable=SC2086  # the package lists are split on purpose
stamp_text() { echo "trixie $(echo $PACKAGES ${EXTRA_PACKAGES:-} | tr -s ' \n' '  ')"; }

mirror() {
    local m
    m=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '$1=="deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    echo "${MIRROR:-$m}"
}

case "$cmd" in
build)
    if [ -f "$dir/$STAMP" ] && [ "$(cat "$dir/$STAMP")" = "$(stamp_text)" ]; then
        echo "chroot $dir is ready"
        exit 0
    fi
    [ "$(id -u)" = 0 ] || { echo "building the chroot needs root" >&2; exit 1; }
    if ! command -v debootstrap >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null 2>&1 || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
    fi
    m=$(mirror); [ -n "$m" ] || { echo "no Debian mirror found; set MIRROR=" >&2; exit 1; }
    # never rm -rf a tree that might still have /dev or /sys mounted in it (an interrupted
    # debootstrap can leave its mounts behind in the host's namespace)
    for old in "$dir" "$dir.partial"; do
        [ -e "$old" ] || continue
        if grep -q " $(realpath "$old")/" /proc/mounts; then
            echo "$old has mounts inside; unmount them first (see /proc/mounts)" >&2; exit 1
        fi
        rm -rf "$old"
    done
    mkdir -p "$(dirname "$dir")"
    t0=$(date +%s)
    debootstrap --variant=minbase trixie "$dir.partial" "$m"
    mv "$dir.partial" "$dir"
    t1=$(date +%s)
    # shellcheck disable=SC2086
    "$0" run "$dir" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends $PACKAGES ${EXTRA_PACKAGES:-}
    "$0" run "$dir" apt-get clean
    stamp_text > "$dir/$STAMP"
    t2=$(date +%s)
    echo "debootstrap: $((t1 - t0)) s, packages: $((t2 - t1)) s," \
        "size: $(du -sh --one-file-system "$dir" | cut -f1)"
    ;;
run)
    [ -d "$dir/usr" ] || { echo "no chroot at $dir (build it first)" >&2; exit 1; }
    # everything below happens in a new mount namespace, with a clean environment (pass
    # variables as `env NAME=VALUE CMD` in CMD)
    # shellcheck disable=SC2016  # expanded by the inner bash
    exec unshare -m --propagation private bash -c '
        d=$1; shift
        mount -t proc proc "$d/proc"
        mount --rbind /sys "$d/sys"
        mount --rbind /dev "$d/dev"
        exec chroot "$d" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
    ' bash "$dir" "$@"
    ;;
*) echo "usage: $0 build|run DIR ..." >&2; exit 2 ;;
esac
