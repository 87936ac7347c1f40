#!/bin/bash
# Build, install or stage the GNOME Shell extension ollamaproxy@fio.ie.
#
#   gnome-extension/build.sh pack [OUTDIR]   zip for extensions.gnome.org or `gnome-extensions
#                                            install` (default OUTDIR: gnome-extension/dist)
#   gnome-extension/build.sh install         pack, then `gnome-extensions install --force` for
#                                            the current user (log out and in on Wayland, then
#                                            `gnome-extensions enable ollamaproxy@fio.ie`)
#   gnome-extension/build.sh stage DIR       copy the extension as it is installed into
#                                            DIR/ollamaproxy@fio.ie (no GNOME tools needed)
#
# The D-Bus contract dbus/ie.fio.OllamaProxy.xml is packed beside the code as
# ie.fio.OllamaProxy.xml: the extension reads its interfaces from there. The repository keeps
# exactly one copy of the XML (dbus/); the extension directory in git has none.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
uuid=ollamaproxy@fio.ie
src=$here/$uuid
xml=$(cd "$here/.." && pwd)/dbus/ie.fio.OllamaProxy.xml

die() { echo "build.sh: $*" >&2; exit 1; }

[ -f "$xml" ] || die "$xml is missing (the D-Bus contract the extension is built from)"
grep -q '<interface name="ie.fio.OllamaProxy.Efficiency">' "$xml" \
    || die "$xml has no ie.fio.OllamaProxy.Efficiency interface"

# every module next to extension.js (gnome-extensions pack takes extension.js, metadata.json,
# stylesheet.css and prefs.js by itself, anything else only as --extra-source)
extra_sources() {
    local f
    for f in "$src"/*.js; do
        case "$(basename "$f")" in extension.js|prefs.js) ;; *) echo "$f" ;; esac
    done
    echo "$xml"
}

pack() {
    local out=$1
    command -v gnome-extensions >/dev/null \
        || die "gnome-extensions not found (it comes with gnome-shell); use 'stage' instead"
    mkdir -p "$out"
    local args=() f
    while read -r f; do args+=("--extra-source=$f"); done < <(extra_sources)
    gnome-extensions pack --force --out-dir="$out" "${args[@]}" "$src"
    echo "$out/$uuid.shell-extension.zip"
}

case "${1:-}" in
pack)
    pack "$(realpath -m "${2:-$here/dist}")"
    ;;
install)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    zip=$(pack "$tmp" | tail -1)
    gnome-extensions install --force "$zip"
    echo "installed $uuid; on Wayland log out and in, then: gnome-extensions enable $uuid"
    ;;
stage)
    dest=${2:?usage: build.sh stage DIR}/$uuid
    rm -rf "$dest"
    mkdir -p "$dest"
    cp "$src"/metadata.json "$src"/extension.js "$dest"/
    [ -f "$src/stylesheet.css" ] && cp "$src/stylesheet.css" "$dest"/
    while read -r f; do cp "$f" "$dest"/; done < <(extra_sources)
    echo "$dest"
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
