"""Structured request log: one JSON line per request on stdout, never any prompt text."""

from __future__ import annotations

import json
import logging
import sys
import time

_LOGGER_NAME = "ollamaproxy.requests"


class RequestLog:
    """Writes one JSON object per finished request (fields chosen by the proxy, no bodies)."""

    def __init__(self, stream=None):
        self._logger = logging.getLogger(_LOGGER_NAME)
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        if stream is not None or not self._logger.handlers:
            for handler in list(self._logger.handlers):
                self._logger.removeHandler(handler)
            handler = logging.StreamHandler(stream or sys.stdout)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self._logger.addHandler(handler)

    def log(self, record: dict) -> None:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z", "event": "request"}
        line.update(record)
        self._logger.info(json.dumps(line, separators=(",", ":")))
