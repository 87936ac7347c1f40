"""Path normalisation and the blocked-endpoint guard (pure)."""

from __future__ import annotations

import fnmatch
import posixpath
from urllib.parse import unquote

_MAX_DECODE_ROUNDS = 4


def normalise_path(raw_path: str) -> str:
    """Canonical form of a request path for security checks.

    Percent-decodes repeatedly (so `%2570` cannot hide a `p`), drops the query, collapses
    repeated slashes, resolves `.` and `..`, strips a trailing slash and lowercases, so
    `//api//pull/`, `/API/Pull`, `/api/%70ull` and `/api/./pull` all become `/api/pull`.
    """
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    path = posixpath.normpath("/" + path.lstrip("/"))
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return path.lower()


class BlockedEndpoints:
    """Matches normalised paths against the configured blocked endpoint patterns."""

    def __init__(self, patterns: list[str]):
        self.patterns = tuple(normalise_path(pattern) if "*" not in pattern else pattern.lower() for pattern in patterns)

    def match(self, path: str) -> str | None:
        """The pattern that blocks `path` (already normalised), or None."""
        for pattern in self.patterns:
            if fnmatch.fnmatchcase(path, pattern):
                return pattern
            if pattern.endswith("/*") and path == pattern[:-2]:
                return pattern
        return None

    def blocks(self, raw_path: str) -> str | None:
        return self.match(normalise_path(raw_path))
