"""Structured request log: one JSON line per request on stdout, never any prompt text."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO


class RequestLog:
    """Writes one JSON object per finished request (fields chosen by the proxy, no bodies)."""

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream

    def log(self, record: dict) -> None:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "event": "request"}
        line.update(record)
        stream = self._stream or sys.stdout
        stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        stream.flush()
