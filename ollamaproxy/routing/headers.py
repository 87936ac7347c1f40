"""Routing headers in: parsed and validated into RoutingHints; a bad value names header, value and allowed (pure)."""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.queue import Priority, parse_priority

MEDIA_TYPES = ("text", "image", "audio", "video", "embedding")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_ID_MAX = 128
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    """A unique id without a syscall per request: a random per-process prefix and a counter (32 hex)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


@dataclass(frozen=True)
class RoutingHints:
    request_id: str
    client_id: str | None = None
    target_backend: str | None = None
    latency_critical: bool = False
    power_efficient: bool = False
    max_latency_ms: float | None = None
    max_power_watts: float | None = None
    priority: Priority = Priority.NORMAL
    media_type: str = "text"


def _bad(header: str, value: str, allowed: str) -> ApiError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return ApiError(400, "invalid_header", f"{header}: {shown!r} is not allowed; expected {allowed}")


def _flag(headers: Mapping[str, str], name: str) -> bool:
    value = headers.get(name)
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _bad(name, value, "true or false (also 1/0, yes/no, on/off)")


def _positive(headers: Mapping[str, str], name: str, unit: str) -> float | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise _bad(name, value, f"a positive number of {unit}")
    return number


def _identifier(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > _ID_MAX or not value.isprintable():
        raise _bad(name, value, f"1-{_ID_MAX} printable characters")
    return value


def parse_routing_headers(headers: Mapping[str, str]) -> RoutingHints:
    """Read every routing header once; raises ApiError(400) on the first bad value."""
    request_id = _identifier(headers, "X-Request-ID") or new_request_id()
    priority = Priority.NORMAL
    raw_priority = headers.get("X-Priority")
    if raw_priority is not None:
        try:
            priority = parse_priority(raw_priority)
        except ValueError:
            raise _bad("X-Priority", raw_priority, "best-effort, low, normal, high, critical, or 0-3") from None
    media_type = "text"
    raw_media = headers.get("X-Media-Type")
    if raw_media is not None:
        media_type = raw_media.strip().lower()
        if media_type not in MEDIA_TYPES:
            raise _bad("X-Media-Type", raw_media, "one of " + ", ".join(MEDIA_TYPES))
    return RoutingHints(
        request_id=request_id,
        client_id=_identifier(headers, "X-Client-ID"),
        target_backend=_identifier(headers, "X-Target-Backend"),
        latency_critical=_flag(headers, "X-Latency-Critical"),
        power_efficient=_flag(headers, "X-Power-Efficient"),
        max_latency_ms=_positive(headers, "X-Max-Latency-Ms", "milliseconds"),
        max_power_watts=_positive(headers, "X-Max-Power-Watts", "watts"),
        priority=priority,
        media_type=media_type,
    )
