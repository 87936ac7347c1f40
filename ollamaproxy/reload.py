"""Config reload (SIGHUP, D-Bus, management API): validate, apply what can change live, keep the rest."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ollamaproxy.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from ollamaproxy.service import Router

log = logging.getLogger("ollamaproxy.reload")

# Backend fields a running router can take over at once; others (id, kind, url, hardware,
# gpu_index, devices, api_key) change what a backend *is* and need a restart.
LIVE_BACKEND_FIELDS = frozenset({"enabled", "max_concurrent", "power_watts", "latency_ms", "tokens_per_second",
                                 "models", "slot_cost", "cancel_on_disconnect"})
# Whole sections applied live; the others (server, security, grpc, request_log, desktop, telemetry's
# sources) are read at start and need a restart.
LIVE_SECTIONS = ("health", "queue", "efficiency", "power", "thermal")


def config_changes(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(keys that can be applied live, keys that need a restart), as dotted names."""
    live, restart = [], []
    for section in type(new).model_fields:
        if section == "backends":
            continue
        if getattr(old, section) != getattr(new, section):
            (live if section in LIVE_SECTIONS else restart).append(section)
    old_backends = {b.id: b for b in old.backends}
    new_backends = {b.id: b for b in new.backends}
    if list(old_backends) != list(new_backends):
        restart.append("backends (added, removed or reordered)")
    for backend_id, backend in new_backends.items():
        before = old_backends.get(backend_id)
        if before is None:
            continue
        for field in type(backend).model_fields:
            if getattr(before, field) != getattr(backend, field):
                key = f"backends.{backend_id}.{field}"
                (live if field in LIVE_BACKEND_FIELDS else restart).append(key)
    return live, restart


class Reloader:
    """Re-reads the config file the router started from and applies it."""

    def __init__(self, router: "Router", path: str | None):
        self.router = router
        self.path = path
        self.last: dict[str, Any] = {}

    def reload(self) -> dict[str, Any]:
        """Apply the file's config; ConfigError (with every problem) keeps the running one."""
        if self.path is None:
            raise ConfigError("reload", ["the router runs on built-in defaults (no config file): nothing to reload"])
        try:
            new = load_config(Path(self.path))
        except ConfigError as error:
            self.last = {"ok": False, "problems": error.problems}
            log.warning(json.dumps({"event": "reload_failed", "config": self.path, "problems": error.problems,
                                    "note": "the running configuration stays in force"}))
            self.router.control.publish("reload", self.last)
            raise
        live, restart = config_changes(self.router.config, new)
        self.router.apply_config(new)
        self.last = {"ok": True, "applied": live, "restart_required": restart}
        log.info(json.dumps({"event": "reloaded", "config": self.path, "applied": live,
                             "restart_required": restart}))
        self.router.control.publish("reload", self.last)
        return self.last

    def reload_logged(self) -> None:
        """For the SIGHUP handler: the outcome is in the log (and on D-Bus), never an exception."""
        try:
            self.reload()
        except ConfigError:
            pass
