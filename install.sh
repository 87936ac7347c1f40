#!/bin/bash
# ollamaproxy user-level installer (no root): a virtualenv, a launcher, the default config, the
# systemd user unit, D-Bus activation and the GNOME Shell extension. Run ./install.sh --help.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./install.sh [--dry-run] [--python PYTHON] [--no-venv]
       ./install.sh --uninstall [--purge] [--dry-run]

Installs ollamaproxy for the current user from the directory this script is in:
  $XDG_DATA_HOME/ollamaproxy/venv              virtualenv with the package (pip install of this tree)
  ~/.local/bin/ollamaproxy                     launcher
  $XDG_CONFIG_HOME/ollamaproxy/config.toml     default config (only when none exists; never overwritten)
  $XDG_CONFIG_HOME/systemd/user/ollamaproxy.service
  $XDG_DATA_HOME/dbus-1/services/ie.fio.OllamaProxy.service    D-Bus activation (via systemd)
  $XDG_DATA_HOME/dbus-1/interfaces/ie.fio.OllamaProxy.xml
  $XDG_DATA_HOME/gnome-shell/extensions/ollamaproxy@fio.ie/   GNOME Quick Settings toggle
Running it again upgrades in place and keeps the config. Everything installed is listed in
$XDG_DATA_HOME/ollamaproxy/install-manifest; --uninstall removes exactly that.

Options:
  --dry-run        print what would be done and change nothing
  --python PY      Python 3.11+ used to create the virtualenv (default: python3)
  --no-venv        no virtualenv: the launcher runs PY -m ollamaproxy (PY must already import it)
  --uninstall      remove everything this script installed (an edited config is kept)
  --purge          with --uninstall: also remove an edited config and the state directory
  -h, --help       this text
EOF
}

ACTION=install
DRY_RUN=0
USE_VENV=1
PYTHON=python3
PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --no-venv) USE_VENV=0 ;;
        --python) [ $# -ge 2 ] || { echo "install.sh: --python needs a value" >&2; exit 2; }; PYTHON=$2; shift ;;
        --python=*) PYTHON=${1#--python=} ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$PURGE" = 1 ] && [ "$ACTION" != uninstall ]; then
    echo "install.sh: --purge only goes with --uninstall" >&2; exit 2
fi

say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

if [ -z "${HOME:-}" ] || [ ! -d "$HOME" ]; then die "HOME is not set to an existing directory"; fi
# XDG base directories: ignored unless absolute, as the spec says.
xdg() { case "${1:-}" in /*) printf '%s' "$1" ;; *) printf '%s' "$2" ;; esac; }
DATA_HOME=$(xdg "${XDG_DATA_HOME:-}" "$HOME/.local/share")
CONFIG_HOME=$(xdg "${XDG_CONFIG_HOME:-}" "$HOME/.config")
STATE_HOME=$(xdg "${XDG_STATE_HOME:-}" "$HOME/.local/state")

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
BIN_DIR=$HOME/.local/bin
APP_DIR=$DATA_HOME/ollamaproxy
VENV_LINK=$APP_DIR/venv
MANIFEST=$APP_DIR/install-manifest
WRAPPER=$BIN_DIR/ollamaproxy
CONFIG_FILE=$CONFIG_HOME/ollamaproxy/config.toml
UNIT_NAME=ollamaproxy.service
UNIT_FILE=$CONFIG_HOME/systemd/user/$UNIT_NAME
BUS_NAME=ie.fio.OllamaProxy
DBUS_SERVICE=$DATA_HOME/dbus-1/services/$BUS_NAME.service
DBUS_XML=$DATA_HOME/dbus-1/interfaces/$BUS_NAME.xml
EXT_UUID=ollamaproxy@fio.ie
EXT_SRC=$REPO/gnome-extension/$EXT_UUID
EXT_DIR=$DATA_HOME/gnome-shell/extensions/$EXT_UUID
STATE_DIR=$STATE_HOME/ollamaproxy

sha() { sha256sum "$1" | cut -d' ' -f1; }
user_systemd() { command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; }
gnome_running() {
    command -v gnome-extensions >/dev/null 2>&1 && command -v pgrep >/dev/null 2>&1 \
        && pgrep -x -u "$(id -u)" gnome-shell >/dev/null 2>&1
}
# A POSIX-shell single-quoted word.
shquote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# ---------------------------------------------------------------- the manifest of a previous install

OLD_ENTRIES=()      # "kind<TAB>path" (config: "config<TAB>sha<TAB>path")
read_manifest() {
    OLD_ENTRIES=()
    [ -f "$MANIFEST" ] || return 0
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; esac
        OLD_ENTRIES+=("$line")
    done < "$MANIFEST"
}
entry_path() { printf '%s' "${1##*$'\t'}"; }
entry_kind() { printf '%s' "${1%%$'\t'*}"; }

# ================================================================= uninstall

uninstall() {
    read_manifest
    if [ ! -f "$MANIFEST" ]; then
        say "Nothing to uninstall: no manifest at $MANIFEST (was ollamaproxy installed by this script?)"
        return 0
    fi
    local entry kind path recorded removes=() dirs=() keep_config=""
    for entry in "${OLD_ENTRIES[@]}"; do
        kind=$(entry_kind "$entry"); path=$(entry_path "$entry")
        case "$kind" in
            file|link|tree) removes+=("$path") ;;
            mkdir) dirs+=("$path") ;;
            config)
                recorded=$(printf '%s' "$entry" | cut -f2)
                if [ -f "$path" ] && [ "$PURGE" != 1 ] && [ "$(sha "$path")" != "$recorded" ]; then
                    keep_config=$path
                else
                    removes+=("$path")
                fi ;;
            *) warn "ignoring unknown manifest line: $entry" ;;
        esac
    done
    if [ "$DRY_RUN" = 1 ]; then
        say "Dry run: would uninstall ollamaproxy (nothing is changed)"
        if user_systemd; then info "would run: systemctl --user disable --now $UNIT_NAME"; fi
        for path in "${removes[@]}"; do
            if [ -e "$path" ] || [ -L "$path" ]; then info "would remove $path"; fi
        done
        if [ -n "$keep_config" ]; then info "would keep $keep_config (edited since install; --purge removes it)"; fi
        info "would remove $MANIFEST and the directories it created, when empty"
        if [ "$PURGE" = 1 ] && [ -d "$STATE_DIR" ]; then info "would remove $STATE_DIR (--purge)"; fi
        return 0
    fi
    say "Uninstalling ollamaproxy"
    if user_systemd; then
        if systemctl --user disable --now "$UNIT_NAME" >/dev/null 2>&1; then
            info "stopped and disabled $UNIT_NAME"
        fi
    fi
    if [ -d "$EXT_DIR" ] && gnome_running; then
        if gnome-extensions disable "$EXT_UUID" >/dev/null 2>&1; then info "disabled GNOME extension $EXT_UUID"; fi
    fi
    for path in "${removes[@]}"; do
        if [ -e "$path" ] || [ -L "$path" ]; then
            rm -rf -- "$path"
            info "removed $path"
        fi
    done
    if [ -n "$keep_config" ]; then info "kept $keep_config: it was edited since install (--purge removes it)"; fi
    rm -f -- "$MANIFEST"
    info "removed $MANIFEST"
    if [ "$PURGE" = 1 ] && [ -d "$STATE_DIR" ]; then
        rm -rf -- "$STATE_DIR"
        info "removed $STATE_DIR (--purge)"
    fi
    # Directories the installer created, deepest first, only when empty.
    local dir
    while IFS= read -r dir; do
        if [ -n "$dir" ] && [ -d "$dir" ] && rmdir -- "$dir" 2>/dev/null; then info "removed empty directory $dir"; fi
    done < <(printf '%s\n' "${dirs[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2-)
    if user_systemd; then
        if systemctl --user daemon-reload; then info "ran systemctl --user daemon-reload"; fi
    fi
    if [ "$PURGE" != 1 ] && [ -d "$STATE_DIR" ]; then
        info "kept $STATE_DIR (request log, saved mode): remove it by hand or use --uninstall --purge"
    fi
    say "ollamaproxy is uninstalled"
}

# ================================================================= install

STAGE=""
JOURNAL=()          # what the commit phase did, for rollback: "placed<TAB>dst<TAB>backup|-", "mkdir<TAB>dir", "venv<TAB>dir"
NEW_ENTRIES=()      # manifest lines of this install
COMMITTED=0

rollback() {
    local i entry kind a b
    [ ${#JOURNAL[@]} -gt 0 ] || return 0
    warn "rolling back: the previous state is restored"
    for ((i = ${#JOURNAL[@]} - 1; i >= 0; i--)); do
        entry=${JOURNAL[$i]}
        IFS=$'\t' read -r kind a b <<< "$entry"
        case "$kind" in
            placed)
                rm -rf -- "$a"
                if [ "$b" != "-" ]; then mv -f -- "$b" "$a"; fi ;;
            mkdir) rmdir -- "$a" 2>/dev/null || true ;;
            venv) rm -rf -- "$a" ;;
        esac
    done
}

on_exit() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$COMMITTED" != 1 ]; then
        rollback || true
        [ "$status" = 0 ] && status=1
        printf 'install.sh: installation failed; nothing was changed\n' >&2
    fi
    [ -n "$STAGE" ] && rm -rf -- "$STAGE"
    exit "$status"
}

# mkdir -p that remembers every directory it created (for rollback and the manifest).
ensure_dir() {
    local dir=$1 missing=() d
    d=$dir
    while [ ! -d "$d" ]; do
        if [ -e "$d" ] || [ -L "$d" ]; then die "cannot create directory $dir: $d exists and is not a directory"; fi
        missing=("$d" "${missing[@]}")
        d=$(dirname -- "$d")
    done
    for d in "${missing[@]}"; do
        mkdir -- "$d" 2>/dev/null || die "cannot create directory $d"
        JOURNAL+=("mkdir"$'\t'"$d")
        NEW_ENTRIES+=("mkdir"$'\t'"$d")
    done
}

# Move a staged file or directory into place, keeping what was there for rollback.
place() {
    local src=$1 dst=$2 backup=-
    ensure_dir "$(dirname -- "$dst")"
    if [ -e "$dst" ] || [ -L "$dst" ]; then
        backup=$STAGE/backup/${#JOURNAL[@]}
        mv -f -- "$dst" "$backup" || die "cannot move the old $dst aside"
    fi
    JOURNAL+=("placed"$'\t'"$dst"$'\t'"$backup")
    mv -f -- "$src" "$dst" || die "cannot install $dst"
}

check_python() {
    local found
    found=$(command -v -- "$PYTHON" 2>/dev/null) || die "Python not found: '$PYTHON' (use --python PATH)"
    case "$found" in /*) ;; *) found=$(cd "$(dirname -- "$found")" && pwd -P)/$(basename -- "$found") ;; esac
    PYTHON=$found
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "$PYTHON is older than Python 3.11 (or broken); ollamaproxy needs 3.11+ (use --python PATH)"
    if [ "$USE_VENV" = 1 ]; then
        "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
            || die "$PYTHON cannot create virtualenvs (on Debian/Ubuntu: sudo apt install python3-venv)"
    else
        "$PYTHON" -c 'import ollamaproxy' 2>/dev/null \
            || die "--no-venv: $PYTHON cannot import ollamaproxy (install it there, or drop --no-venv)"
    fi
}

install() {
    local f
    for f in config.example.toml "systemd-user/$UNIT_NAME"; do
        [ -f "$REPO/$f" ] || die "$REPO/$f is missing: run install.sh from an ollamaproxy source tree"
    done
    if [ "$USE_VENV" = 1 ]; then
        if [ ! -f "$REPO/pyproject.toml" ] || [ ! -d "$REPO/ollamaproxy" ]; then
            die "$REPO has no pyproject.toml / ollamaproxy package to install"
        fi
    fi
    check_python
    read_manifest

    local have_xml=0 have_ext=0 config_new=1 old_config_entry="" entry
    [ -f "$REPO/dbus/$BUS_NAME.xml" ] && have_xml=1
    [ -d "$EXT_SRC" ] && have_ext=1
    [ -e "$CONFIG_FILE" ] && config_new=0
    for entry in "${OLD_ENTRIES[@]}"; do
        if [ "$(entry_kind "$entry")" = config ]; then old_config_entry=$entry; fi
    done

    if [ "$DRY_RUN" = 1 ]; then
        say "Dry run: would install ollamaproxy from $REPO (nothing is changed)"
    elif [ ${#OLD_ENTRIES[@]} -gt 0 ]; then
        say "Upgrading ollamaproxy in place from $REPO"
    else
        say "Installing ollamaproxy from $REPO"
    fi
    if [ "$DRY_RUN" = 1 ]; then
        if [ "$USE_VENV" = 1 ]; then
            info "would create a virtualenv with $PYTHON and pip install $REPO into it, at $VENV_LINK"
        else
            info "would use $PYTHON (--no-venv)"
        fi
        info "would write the launcher $WRAPPER"
        if [ "$config_new" = 1 ]; then info "would write the default config $CONFIG_FILE"
        else info "would keep the existing config $CONFIG_FILE"; fi
        info "would write the systemd user unit $UNIT_FILE"
        info "would write the D-Bus activation file $DBUS_SERVICE"
        if [ "$have_xml" = 1 ]; then info "would write the D-Bus interface $DBUS_XML"; fi
        if [ "$have_ext" = 1 ]; then info "would install the GNOME extension into $EXT_DIR"; fi
        info "would write the manifest $MANIFEST"
        if user_systemd; then info "would run systemctl --user daemon-reload"; fi
        return 0
    fi

    trap on_exit EXIT
    trap 'exit 130' INT TERM
    STAGE=$(mktemp -d "${TMPDIR:-/tmp}/ollamaproxy-install.XXXXXX") || die "cannot create a staging directory"
    mkdir -p "$STAGE/files" "$STAGE/backup"

    # ---- stage everything first: a failure here leaves the installed state untouched
    local launcher_target
    if [ "$USE_VENV" = 1 ]; then
        launcher_target="exec $(shquote "$VENV_LINK/bin/python") -m ollamaproxy \"\$@\""
    else
        launcher_target="exec $(shquote "$PYTHON") -m ollamaproxy \"\$@\""
    fi
    printf '#!/bin/sh\n# ollamaproxy launcher, written by install.sh (remove with install.sh --uninstall)\n%s\n' \
        "$launcher_target" > "$STAGE/files/launcher"
    chmod 755 "$STAGE/files/launcher"

    cp -- "$REPO/systemd-user/$UNIT_NAME" "$STAGE/files/unit"
    if [ -f "$REPO/dbus/$BUS_NAME.service" ]; then
        sed -e "s|^Exec=.*|Exec=$WRAPPER serve|" "$REPO/dbus/$BUS_NAME.service" > "$STAGE/files/dbus-service"
    else
        printf '# D-Bus activation for ollamaproxy, written by install.sh\n[D-BUS Service]\nName=%s\nExec=%s serve\nSystemdService=%s\n' \
            "$BUS_NAME" "$WRAPPER" "$UNIT_NAME" > "$STAGE/files/dbus-service"
    fi
    grep -q "^SystemdService=$UNIT_NAME\$" "$STAGE/files/dbus-service" \
        || die "$REPO/dbus/$BUS_NAME.service has no SystemdService=$UNIT_NAME line"
    grep -q "^Exec=/" "$STAGE/files/dbus-service" || die "the D-Bus activation file has no absolute Exec= line"
    if [ "$have_xml" = 1 ]; then cp -- "$REPO/dbus/$BUS_NAME.xml" "$STAGE/files/dbus-xml"; fi
    if [ "$have_ext" = 1 ]; then cp -R -- "$EXT_SRC" "$STAGE/files/extension"; fi
    if [ "$config_new" = 1 ]; then cp -- "$REPO/config.example.toml" "$STAGE/files/config"; fi

    local new_venv=""
    if [ "$USE_VENV" = 1 ]; then
        ensure_dir "$APP_DIR"
        # A fresh versioned virtualenv, switched in by replacing the `venv` symlink: scripts inside
        # keep valid paths, and the old one stays usable until the switch.
        new_venv=$APP_DIR/venv-$(date +%Y%m%d%H%M%S)-$$
        JOURNAL+=("venv"$'\t'"$new_venv")
        say "Creating the virtualenv $new_venv"
        "$PYTHON" -m venv -- "$new_venv" > "$STAGE/venv.log" 2>&1 \
            || { cat "$STAGE/venv.log" >&2; die "creating the virtualenv failed (see above)"; }
        mkdir -p "$STAGE/src"
        for f in pyproject.toml setup.cfg setup.py MANIFEST.in README.md LICENSE; do
            if [ -e "$REPO/$f" ]; then cp -- "$REPO/$f" "$STAGE/src/"; fi
        done
        cp -R -- "$REPO/ollamaproxy" "$STAGE/src/"
        find "$STAGE/src" -name __pycache__ -prune -exec rm -rf {} +
        say "Installing the package into it (pip install $REPO)"
        "$new_venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "$STAGE/src" \
            > "$STAGE/pip.log" 2>&1 || { tail -n 30 "$STAGE/pip.log" >&2; die "pip install failed (see above)"; }
        "$new_venv/bin/python" -c 'import ollamaproxy' || die "the new virtualenv cannot import ollamaproxy"
        NEW_ENTRIES+=("tree"$'\t'"$new_venv")
    fi

    # ---- commit: move everything into place (each step is undone on failure)
    say "Installing files"
    if [ -n "$new_venv" ]; then
        ln -s -- "$(basename -- "$new_venv")" "$STAGE/files/venv-link"
        place "$STAGE/files/venv-link" "$VENV_LINK"
        NEW_ENTRIES+=("link"$'\t'"$VENV_LINK")
        info "virtualenv $VENV_LINK -> $(basename -- "$new_venv")"
    fi
    place "$STAGE/files/launcher" "$WRAPPER"; NEW_ENTRIES+=("file"$'\t'"$WRAPPER"); info "launcher $WRAPPER"
    if [ "$config_new" = 1 ]; then
        place "$STAGE/files/config" "$CONFIG_FILE"
        NEW_ENTRIES+=("config"$'\t'"$(sha "$CONFIG_FILE")"$'\t'"$CONFIG_FILE")
        info "default config $CONFIG_FILE (check it with: ollamaproxy check-config)"
    else
        if [ -n "$old_config_entry" ]; then NEW_ENTRIES+=("$old_config_entry"); fi
        info "kept the existing config $CONFIG_FILE"
    fi
    place "$STAGE/files/unit" "$UNIT_FILE"; NEW_ENTRIES+=("file"$'\t'"$UNIT_FILE"); info "systemd user unit $UNIT_FILE"
    place "$STAGE/files/dbus-service" "$DBUS_SERVICE"; NEW_ENTRIES+=("file"$'\t'"$DBUS_SERVICE")
    info "D-Bus activation $DBUS_SERVICE"
    if [ "$have_xml" = 1 ]; then
        place "$STAGE/files/dbus-xml" "$DBUS_XML"; NEW_ENTRIES+=("file"$'\t'"$DBUS_XML"); info "D-Bus interface $DBUS_XML"
    else
        info "skipped the D-Bus interface XML: $REPO/dbus/$BUS_NAME.xml is not in this tree"
    fi
    if [ "$have_ext" = 1 ]; then
        place "$STAGE/files/extension" "$EXT_DIR"; NEW_ENTRIES+=("tree"$'\t'"$EXT_DIR"); info "GNOME extension $EXT_DIR"
    else
        info "skipped the GNOME extension: $EXT_SRC is not in this tree"
    fi

    # Directories created by an earlier install stay ours; the manifest is written last.
    ensure_dir "$APP_DIR"
    for entry in "${OLD_ENTRIES[@]}"; do
        if [ "$(entry_kind "$entry")" = mkdir ] && [ -d "$(entry_path "$entry")" ]; then NEW_ENTRIES+=("$entry"); fi
    done
    { printf '# ollamaproxy install manifest (kind<TAB>path): install.sh --uninstall removes these\n'
      printf '%s\n' "${NEW_ENTRIES[@]}" | awk '!seen[$0]++'; } > "$STAGE/files/manifest"
    place "$STAGE/files/manifest" "$MANIFEST"

    COMMITTED=1
    # Leftovers of the previous install that this one no longer has (an old virtualenv, a removed file).
    local path
    for entry in "${OLD_ENTRIES[@]}"; do
        case "$(entry_kind "$entry")" in file|link|tree) ;; *) continue ;; esac
        path=$(entry_path "$entry")
        if ! printf '%s\n' "${NEW_ENTRIES[@]}" | awk -F'\t' '{ print $NF }' | grep -qxF -- "$path"; then
            rm -rf -- "$path"
            info "removed the old $path"
        fi
    done

    # ---- after the files: tell systemd, enable the extension, say what is next
    if user_systemd; then
        if systemctl --user daemon-reload; then info "ran systemctl --user daemon-reload"
        else warn "systemctl --user daemon-reload failed; run it yourself"; fi
        if systemctl --user is-active --quiet "$UNIT_NAME" 2>/dev/null; then
            if systemctl --user try-restart "$UNIT_NAME"; then info "restarted the running $UNIT_NAME (upgrade)"
            else warn "restarting $UNIT_NAME failed; run: systemctl --user restart $UNIT_NAME"; fi
        fi
    else
        info "no systemd user manager reachable here; in your session run: systemctl --user daemon-reload"
    fi
    if [ "$have_ext" = 1 ]; then
        if gnome_running; then
            if gnome-extensions enable "$EXT_UUID" >/dev/null 2>&1; then
                info "enabled the GNOME extension $EXT_UUID"
            else
                info "GNOME Shell loads new extensions at the next login; then run: gnome-extensions enable $EXT_UUID"
            fi
        else
            info "no GNOME session running; after logging in to GNOME run: gnome-extensions enable $EXT_UUID"
        fi
    fi
    case ":${PATH:-}:" in
        *":$BIN_DIR:"*) ;;
        *) warn "$BIN_DIR is not on your PATH; add it, or run $WRAPPER directly" ;;
    esac
    say "ollamaproxy is installed"
    info "start it now and at every login:  systemctl --user enable --now $UNIT_NAME"
    info "if Ollama itself listens on 11434: ollamaproxy migrate-ollama   (explains how to move it to 11435)"
    info "uninstall:                         $REPO/install.sh --uninstall"
}

if [ "$ACTION" = uninstall ]; then
    uninstall
else
    install
fi
