"""Health states and their classification from probe outcomes, with backoff while down (pure)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class Health(str, enum.Enum):
    UNKNOWN = "unknown"              # not probed yet
    HEALTHY = "healthy"
    DOWN = "down"                    # unreachable, timed out or answering errors
    MISCONFIGURED = "misconfigured"  # 401/403: wrong key or URL
    BUSY = "busy"                    # 429/503: overloaded, come back after Retry-After


@dataclass(frozen=True)
class ProbeOutcome:
    health: Health
    reason: str
    retry_after_seconds: float | None = None


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now_epoch)


def classify_status(status: int, retry_after: str | None = None, now_epoch: float = 0.0) -> ProbeOutcome:
    """Health implied by an HTTP status from a backend."""
    if 200 <= status < 300:
        return ProbeOutcome(Health.HEALTHY, "ok")
    if status in (401, 403):
        return ProbeOutcome(Health.MISCONFIGURED, f"HTTP {status}: check the backend's url and api_key")
    if status in (429, 503):
        return ProbeOutcome(Health.BUSY, f"HTTP {status}", parse_retry_after(retry_after, now_epoch))
    return ProbeOutcome(Health.DOWN, f"HTTP {status}")


def next_probe_delay(health: Health, consecutive_failures: int, interval: float, max_backoff: float,
                     retry_after: float | None = None) -> float:
    """Seconds until the next health probe: the interval while fine, doubling per failure while not."""
    if health in (Health.HEALTHY, Health.UNKNOWN):
        return interval
    if health is Health.BUSY and retry_after is not None:
        return min(max(retry_after, 0.1), max_backoff)
    exponent = max(0, consecutive_failures - 1)
    return min(interval * (2 ** min(exponent, 16)), max_backoff)
