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


class RequestLog:
    """Writes one JSON object per finished request (fields chosen by the proxy, no bodies).

    Lines are flushed together at most FLUSH_DELAY_SECONDS after they are written (one write
    for a burst instead of one per request); `flush()` at shutdown writes whatever is left.
    """

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self._sinks: list[Callable[[dict], None]] = []
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
        for sink in self._sinks:
            try:
                sink(line)
            except Exception:  # noqa: BLE001
                log.exception("request log sink failed")
        stream = self._stream or sys.stdout
        stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            stream.flush()
            return
        self._flush_pending = True
        loop.call_later(FLUSH_DELAY_SECONDS, self.flush)

    def flush(self) -> None:
        self._flush_pending = False
        (self._stream or sys.stdout).flush()
