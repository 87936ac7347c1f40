"""Latency estimates per (backend, model): measured EWMAs of TTFT and decode rate, with config fallbacks (pure).

Time to first token (seconds) and decode throughput (tokens per second) are tracked apart and
never mixed: one is a time, the other a rate. Each is an exponentially weighted moving average
updated per sample (no clock), so the same samples always give the same estimate.

Fallback: a (backend, model) pair without samples of a kind answers with the caller's configured
value and source "config", even when the backend has samples for other models, since both TTFT
and throughput depend strongly on the model's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MEASURED = "measured"
CONFIG = "config"


@dataclass(slots=True)
class _Ewma:
    value: float = 0.0
    count: int = 0

    def add(self, sample: float, alpha: float) -> None:
        self.value = sample if self.count == 0 else alpha * sample + (1.0 - alpha) * self.value
        self.count += 1


@dataclass(slots=True)
class _PairStats:
    ttft: _Ewma
    tps: _Ewma


@dataclass(frozen=True, slots=True)
class SampleCounts:
    ttft: int
    tokens_per_second: int


class Estimates:
    """EWMA of TTFT and of tokens/second per (backend_id, model); `alpha` weighs the newest sample."""

    def __init__(self, alpha: float = 0.3):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        self.alpha = alpha
        self._stats: dict[tuple[str, str], _PairStats] = {}

    def record(self, backend_id: str, model: str, ttft_s: float | None, tokens: int | None,
               decode_s: float | None) -> None:
        """Add one finished request: its TTFT, and `tokens` generated in `decode_s` seconds of decoding.

        A TTFT that is None, negative or not finite is ignored; a rate sample is ignored when
        tokens < 2 or decode_s <= 0 (too short to be a rate) or either is missing.
        """
        key = (backend_id, model)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = _PairStats(_Ewma(), _Ewma())
        if ttft_s is not None and math.isfinite(ttft_s) and ttft_s >= 0.0:
            stats.ttft.add(float(ttft_s), self.alpha)
        if tokens is not None and tokens >= 2 and decode_s is not None and math.isfinite(decode_s) and decode_s > 0.0:
            stats.tps.add(tokens / decode_s, self.alpha)

    def ttft(self, backend_id: str, model: str, fallback_s: float) -> tuple[float, str]:
        """(seconds, "measured" | "config") for the time to first token."""
        stats = self._stats.get((backend_id, model))
        if stats is None or stats.ttft.count == 0:
            return fallback_s, CONFIG
        return stats.ttft.value, MEASURED

    def tokens_per_second(self, backend_id: str, model: str, fallback_tps: float) -> tuple[float, str]:
        """(tokens per second, "measured" | "config") for decoding."""
        stats = self._stats.get((backend_id, model))
        if stats is None or stats.tps.count == 0:
            return fallback_tps, CONFIG
        return stats.tps.value, MEASURED

    def sample_counts(self, backend_id: str, model: str) -> SampleCounts:
        stats = self._stats.get((backend_id, model))
        if stats is None:
            return SampleCounts(0, 0)
        return SampleCounts(stats.ttft.count, stats.tps.count)

    def forget_backend(self, backend_id: str) -> None:
        """Drop every estimate of one backend (removed from the config, or its hardware changed)."""
        for key in [key for key in self._stats if key[0] == backend_id]:
            del self._stats[key]


def expected_latency_s(ttft_s: float, tokens_per_second: float, expected_tokens: int) -> float:
    """Seconds until the last of `expected_tokens` arrives: TTFT plus decoding time."""
    if tokens_per_second <= 0.0:
        raise ValueError(f"tokens_per_second must be > 0, got {tokens_per_second!r}")
    return ttft_s + expected_tokens / tokens_per_second
