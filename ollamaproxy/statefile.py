"""Persisted user state under the XDG state dir: the user's chosen mode survives restarts (holds do not)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ollamaproxy.modes import InvalidModeError, parse_mode

log = logging.getLogger("ollamaproxy.state")


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "ollamaproxy"


class StateFile:
    """A small JSON document written atomically (temp file + rename)."""

    def __init__(self, path: Path | None = None):
        self.path = path or state_dir() / "state.json"

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning(json.dumps({"event": "state_unreadable", "path": str(self.path), "reason": str(error)}))
            return {}
        return data if isinstance(data, dict) else {}

    def load_mode(self) -> str | None:
        """The persisted user mode, or None when none (or an invalid one) was saved."""
        mode = self._read().get("mode")
        if not isinstance(mode, str):
            return None
        try:
            return parse_mode(mode).value
        except InvalidModeError:
            log.warning(json.dumps({"event": "state_invalid_mode", "mode": mode}))
            return None

    def save_mode(self, mode: str) -> None:
        data = self._read()
        data["mode"] = mode
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
        except OSError as error:
            log.warning(json.dumps({"event": "state_not_saved", "path": str(self.path), "reason": str(error)}))
