"""`ollamaproxy migrate-ollama`: move a systemd-managed Ollama off port 11434 with a drop-in (and back)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

DROP_IN_NAME = "ollamaproxy.conf"
DEFAULT_PORT = 11435
PROXY_PORT = 11434
SYSTEM_DIR = "/etc/systemd/system"


@dataclass
class Unit:
    scope: str            # "system" | "user"
    name: str
    active: str           # ActiveState
    environment: str      # Environment= as systemctl shows it


def _user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "systemd" / "user"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "migrate-ollama", help="move an existing Ollama service from port 11434 to an internal port",
        description="Ollama listens on 127.0.0.1:11434, the address clients use; ollamaproxy needs that port. "
                    "This writes a systemd drop-in that moves Ollama to an internal port (default 11435, where "
                    "the default ollamaproxy config looks for it), then reloads systemd and restarts Ollama. "
                    "Without --apply it only explains what it would do.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="write the drop-in, daemon-reload, restart Ollama")
    action.add_argument("--revert", action="store_true", help="remove the drop-in, daemon-reload, restart Ollama")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"Ollama's new port (default {DEFAULT_PORT})")
    parser.add_argument("--host", default="127.0.0.1", help="Ollama's new listen address (default 127.0.0.1)")
    parser.add_argument("--unit", default="ollama.service", help="Ollama's unit name (default ollama.service)")
    parser.add_argument("--scope", choices=["auto", "system", "user"], default="auto",
                        help="system unit or user unit (default: the one that exists, user first)")
    parser.add_argument("--systemd-dir", metavar="DIR",
                        help=f"unit directory for the drop-in (default {SYSTEM_DIR}, or ~/.config/systemd/user "
                             "for a user unit)")
    parser.add_argument("--systemctl", default="systemctl", metavar="PATH", help="systemctl command to use")
    parser.add_argument("--dry-run", action="store_true", help="print what would change and change nothing")
    parser.set_defaults(func=run)
    return parser


class _Systemctl:
    def __init__(self, command: str):
        self.command = command

    def run(self, scope: str, *args: str) -> subprocess.CompletedProcess:
        argv = [self.command, *(["--user"] if scope == "user" else []), *args]
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)

    def describe(self, scope: str, *args: str) -> str:
        return " ".join([self.command, *(["--user"] if scope == "user" else []), *args])

    def find(self, scope: str, unit: str) -> Unit | None:
        try:
            done = self.run(scope, "show", "--property=LoadState,ActiveState,Environment", unit)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
        if values.get("LoadState") != "loaded":
            return None
        return Unit(scope, unit, values.get("ActiveState", "unknown"), values.get("Environment", ""))


def _ollama_host(environment: str) -> str | None:
    value = None
    for item in environment.split():
        if item.startswith("OLLAMA_HOST="):
            value = item.split("=", 1)[1]
    return value


def drop_in_text(host: str, port: int) -> str:
    return ("# Written by `ollamaproxy migrate-ollama`: ollamaproxy serves clients on 127.0.0.1:11434 and\n"
            f"# forwards to Ollama here. Undo with `ollamaproxy migrate-ollama --revert`.\n"
            "[Service]\n"
            f'Environment="OLLAMA_HOST={host}:{port}"\n')


def _writable(path: Path) -> bool:
    """Whether `path` (or its nearest existing parent) can be written by us."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return os.access(probe, os.W_OK)


def _say(text: str = "") -> None:
    print(text, flush=True)


def _fail(text: str, code: int = 1) -> int:
    print(f"ollamaproxy migrate-ollama: {text}", file=sys.stderr, flush=True)
    return code


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536 or args.port == PROXY_PORT:
        return _fail(f"--port must be 1-65535 and not {PROXY_PORT} (ollamaproxy's own port), got {args.port}", 2)
    systemctl = _Systemctl(args.systemctl)
    scopes = ["user", "system"] if args.scope == "auto" else [args.scope]
    unit = None
    for scope in scopes:
        unit = systemctl.find(scope, args.unit)
        if unit is not None:
            break
    if unit is None:
        where = " or ".join(f"{s} unit" for s in scopes)
        return _fail(f"no {args.unit} found as a {where} (asked `{args.systemctl}`). If Ollama runs another way, "
                     f"start it with OLLAMA_HOST={args.host}:{args.port} yourself.")
    base = Path(args.systemd_dir) if args.systemd_dir else (_user_dir() if unit.scope == "user" else Path(SYSTEM_DIR))
    drop_dir = base / f"{unit.name}.d"
    drop_in = drop_dir / DROP_IN_NAME
    wanted = drop_in_text(args.host, args.port)
    current = _ollama_host(unit.environment)
    sudo = "sudo " if unit.scope == "system" else ""

    _say(f"Found Ollama as the {unit.scope} unit {unit.name} ({unit.active}); "
         f"OLLAMA_HOST is {current or 'not set (Ollama then listens on 127.0.0.1:11434)'}.")
    if args.revert:
        return _revert(args, systemctl, unit, drop_in, sudo)
    if drop_in.exists() and drop_in.read_text() == wanted and current == f"{args.host}:{args.port}":
        _say(f"Already done: {drop_in} moves Ollama to {args.host}:{args.port}. Nothing to change.")
        return 0
    steps = [f"write {drop_in}:\n" + "".join(f"       {line}\n" for line in wanted.splitlines()[2:]).rstrip(),
             systemctl.describe(unit.scope, "daemon-reload"),
             systemctl.describe(unit.scope, "try-restart", unit.name) + "   (restarts Ollama only if it is running)"]
    if not args.apply:
        _say(f"ollamaproxy listens on 127.0.0.1:{PROXY_PORT} for clients, so Ollama moves to "
             f"{args.host}:{args.port}:")
        for number, step in enumerate(steps, 1):
            _say(f"  {number}. {step}")
        _say(f"Point an ollamaproxy backend at http://{args.host}:{args.port} (the default config does).")
        _say(f"To do it: {sudo}ollamaproxy migrate-ollama --apply" + (" --scope user" if unit.scope == "user" else "")
             + ("   (the system unit's drop-in needs root)" if sudo else ""))
        _say("To undo later: ollamaproxy migrate-ollama --revert")
        return 0
    if args.dry_run:
        _say("Dry run, nothing changed. Would:")
        for number, step in enumerate(steps, 1):
            _say(f"  {number}. {step}")
        return 0
    if not _writable(drop_dir):
        return _fail(f"cannot write {drop_in}: permission denied. The {unit.scope} unit's drop-in needs root: "
                     f"run `sudo ollamaproxy migrate-ollama --apply`.")
    try:
        drop_dir.mkdir(parents=True, exist_ok=True)
        temporary = drop_in.with_name(f".{DROP_IN_NAME}.tmp")
        temporary.write_text(wanted)
        os.replace(temporary, drop_in)
    except OSError as error:
        return _fail(f"cannot write {drop_in}: {error.strerror or error}")
    _say(f"wrote {drop_in} (OLLAMA_HOST={args.host}:{args.port})")
    if not _systemctl_step(systemctl, unit.scope, "daemon-reload", revert_hint=True):
        return 1
    if not _systemctl_step(systemctl, unit.scope, "try-restart", unit.name, revert_hint=True):
        return 1
    after = systemctl.find(unit.scope, unit.name)
    effective = _ollama_host(after.environment) if after is not None else None
    if effective != f"{args.host}:{args.port}":
        _say(f"warning: systemd reports OLLAMA_HOST={effective or '(unset)'} for {unit.name}: another drop-in or the "
             f"unit itself overrides it; check `{systemctl.describe(unit.scope, 'cat', unit.name)}`.")
        return 1
    _say(f"Done: Ollama now listens on {args.host}:{args.port}; ollamaproxy can take 127.0.0.1:{PROXY_PORT}.")
    return 0


def _revert(args: argparse.Namespace, systemctl: _Systemctl, unit: Unit, drop_in: Path, sudo: str) -> int:
    if not drop_in.exists():
        _say(f"Nothing to revert: {drop_in} does not exist.")
        return 0
    steps = [f"remove {drop_in}", systemctl.describe(unit.scope, "daemon-reload"),
             systemctl.describe(unit.scope, "try-restart", unit.name)]
    if args.dry_run:
        _say("Dry run, nothing changed. Would:")
        for number, step in enumerate(steps, 1):
            _say(f"  {number}. {step}")
        return 0
    if not _writable(drop_in.parent):
        return _fail(f"cannot remove {drop_in}: permission denied; run `{sudo}ollamaproxy migrate-ollama --revert`.")
    try:
        drop_in.unlink()
        if not any(drop_in.parent.iterdir()):
            drop_in.parent.rmdir()
    except OSError as error:
        return _fail(f"cannot remove {drop_in}: {error.strerror or error}")
    _say(f"removed {drop_in}")
    if not _systemctl_step(systemctl, unit.scope, "daemon-reload"):
        return 1
    if not _systemctl_step(systemctl, unit.scope, "try-restart", unit.name):
        return 1
    _say(f"Done: Ollama is back on its own settings (127.0.0.1:{PROXY_PORT} unless configured otherwise); "
         "stop ollamaproxy or move it first, they cannot share the port.")
    return 0


def _systemctl_step(systemctl: _Systemctl, scope: str, *args: str, revert_hint: bool = False) -> bool:
    command = systemctl.describe(scope, *args)
    try:
        done = systemctl.run(scope, *args)
    except (OSError, subprocess.TimeoutExpired) as error:
        _fail(f"`{command}` could not run: {error}")
        return False
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        _fail(f"`{command}` failed (exit {done.returncode}): {detail}"
              + ("; the drop-in is in place, undo with `ollamaproxy migrate-ollama --revert`" if revert_hint else ""))
        return False
    _say(f"ran {command}")
    return True
