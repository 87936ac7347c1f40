"""Structured request log: one JSON line per request on stdout, never any prompt text."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger("ollamaproxy.requestlog")

FLUSH_DELAY_SECONDS = 0.05


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


class RequestLog:
    """Writes one JSON object per finished request (fields chosen by the proxy, no bodies).

    Off the hot path: `log()` only stamps and queues the record; at most FLUSH_DELAY_SECONDS
    later one batch is encoded, written with one flush, and handed to the sinks (metrics, the
    SQLite request log). `flush()` at shutdown handles whatever is left. Without a running event
    loop (scripts, tests) records are handled at once.
    """

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self._sinks: list[Callable[[dict], None]] = []
        self._pending: list[dict] = []
        self._flush_pending = False
        self._second = -1
        self._stamp = ""

    def _time(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return self._stamp

    def add_sink(self, sink: Callable[[dict], None]) -> None:
        """Also hand every record to `sink` (metrics, the SQLite log); a failing sink never breaks a request."""
        self._sinks.append(sink)

    def log(self, record: dict) -> None:
        line = {"time": self._time(), "event": "request"}
        line.update(record)
        self._pending.append(line)
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_pending = True
        loop.call_later(FLUSH_DELAY_SECONDS, self.flush)

    def flush(self) -> None:
        """Write and hand on every queued record now."""
        self._flush_pending = False
        pending, self._pending = self._pending, []
        if not pending:
            return
        stream = self._stream or sys.stdout
        stream.write("".join(_ENCODE(line) + "\n" for line in pending))
        stream.flush()
        for sink in self._sinks:
            for line in pending:
                try:
                    sink(line)
                except Exception:  # noqa: BLE001
                    log.exception("request log sink failed")
