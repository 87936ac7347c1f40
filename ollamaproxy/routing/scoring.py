"""Scoring: rank candidate backends for one request under an efficiency mode, with exclusion reasons (pure).

Steps, all over snapshots the caller built (no I/O, no clock, no logging):

1. Hard constraints per backend, each exclusion with a human reason: X-Target-Backend, the
   mode's hardware kinds, its temperature and power caps, X-Max-Power-Watts, X-Max-Latency-Ms.
2. Hardware preference: a mode's fallback kinds (quiet: nvidia; ultra-efficiency: all but npu)
   survive only when no backend of an allowed kind does; with `lowest_power_only` only the
   lowest-power fallback survivors stay (ties all stay).
3. Score (lower is better) = w_latency × latency/best latency + w_energy × energy/best energy
   + w_load × in_flight/capacity + w_residency × (0 if the model is loaded else 1).
   Expected latency = queue wait + model load penalty (when not loaded) + TTFT + tokens/rate;
   queue wait = (queued + in_flight − capacity + 1) / capacity × service time when no slot is free.
   Energy = power × busy time (TTFT + tokens/rate); waiting and loading are not counted.
   Ties go to config order, then backend id.

Headers: latency_critical scores with performance weights and waives a cap the mode marks as
waivable (efficiency's 60 W cap); power_efficient scores with efficiency weights only. When both
are set, latency_critical wins. Other hard constraints of the mode always hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ollamaproxy.modes import MODE_SPECS, Mode

MODEL_LOAD_PENALTY_S = 2.0
_MIN_TPS = 1e-3
_TINY = 1e-9

_MODE_RULE = {
    Mode.PERFORMANCE: "mode-performance:lowest-latency",
    Mode.BALANCED: "mode-balanced:latency-energy",
    Mode.EFFICIENCY: "mode-efficiency:lowest-energy",
    Mode.QUIET: "mode-quiet:quiet-hardware",
    Mode.ULTRA_EFFICIENCY: "mode-ultra-efficiency:npu-only",
}
_FALLBACK_RULE = {
    Mode.QUIET: "mode-quiet:fallback-dgpu",
    Mode.ULTRA_EFFICIENCY: "mode-ultra-efficiency:lowest-power",
}


@dataclass(slots=True)
class BackendView:
    """Snapshot of one candidate backend, built by the caller."""

    backend_id: str
    hardware: str             # npu | igpu | nvidia | cpu
    power_watts: float        # live draw when known, else config estimate
    power_source: str         # "measured" | "config"
    ttft_s: float
    tokens_per_second: float
    estimate_source: str      # "measured" | "config"
    in_flight: int
    capacity: int
    queued: int               # requests waiting that could use it
    loaded: bool              # model resident
    temperature_c: float | None = None
    order: int = 0            # config order, final tie-breaker


@dataclass(slots=True)
class RequestView:
    model: str
    expected_tokens: int = 256
    latency_critical: bool = False
    power_efficient: bool = False
    max_latency_ms: float | None = None
    max_power_watts: float | None = None
    target_backend: str | None = None   # already validated by the caller


@dataclass(slots=True)
class Ranked:
    backend_id: str
    score: float              # lower is better
    expected_latency_ms: float
    expected_power_w: float
    expected_energy_j: float
    reason: str               # machine-readable rule that decided, e.g. "mode-quiet:fallback-dgpu"


@dataclass(frozen=True, slots=True)
class Ranking:
    mode: Mode
    ranked: tuple[Ranked, ...]          # best first; empty when nothing may serve
    excluded: dict[str, str]            # backend_id -> human reason

    @property
    def best(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None


@lru_cache(maxsize=32)
def _kinds(kinds: frozenset[str]) -> str:
    names = sorted(kinds)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def rank_candidates(mode: Mode, request: RequestView, backends: Sequence[BackendView], *,
                    load_penalty_s: float = MODEL_LOAD_PENALTY_S) -> Ranking:
    """All backends that may serve `request` in `mode`, best first, and why each other one may not.

    Raises ValueError for Mode.AUTO (resolve it first) or an unknown mode; never for "none left".
    """
    spec = MODE_SPECS.get(mode)
    if spec is None or spec.mode is Mode.AUTO:
        raise ValueError(f"rank_candidates needs a concrete mode, got {str(mode)!r}; resolve auto first")
    mode = spec.mode
    if request.latency_critical:
        weights, rule = MODE_SPECS[Mode.PERFORMANCE], "header:latency-critical"
    elif request.power_efficient:
        weights, rule = MODE_SPECS[Mode.EFFICIENCY], "header:power-efficient"
    else:
        weights, rule = spec, _MODE_RULE[mode]
    if request.target_backend is not None:
        rule = "header:target-backend"
    cap_w = spec.max_backend_watts
    if request.latency_critical and spec.cap_waived_for_latency_critical:
        cap_w = None
    cap_t = spec.max_temperature_c
    target = request.target_backend
    max_power = request.max_power_watts
    max_latency_ms = request.max_latency_ms
    tokens = request.expected_tokens
    allowed = spec.allowed_hardware
    fallback = spec.fallback_hardware

    excluded: dict[str, str] = {}
    survivors: list[tuple[BackendView, float, float]] = []   # (backend, latency_s, busy_s)
    for b in backends:
        bid = b.backend_id
        if target is not None and bid != target:
            excluded[bid] = f"X-Target-Backend selects {target}"
            continue
        hw = b.hardware
        if hw not in allowed and hw not in fallback:
            excluded[bid] = f"hardware {hw} not allowed in {mode.value} mode"
            continue
        temp = b.temperature_c
        if cap_t is not None and temp is not None and temp > cap_t:
            excluded[bid] = f"temperature {temp:g} °C over the {cap_t:g} °C cap of {mode.value} mode"
            continue
        power = b.power_watts
        if cap_w is not None and power > cap_w:
            excluded[bid] = f"power {power:g} W over the {cap_w:g} W cap of {mode.value} mode"
            continue
        if max_power is not None and power > max_power:
            excluded[bid] = f"X-Max-Power-Watts {max_power:g}: needs <= {max_power:g} W, backend estimates {power:g} W"
            continue
        tps = b.tokens_per_second
        busy = b.ttft_s + tokens / (tps if tps > _MIN_TPS else _MIN_TPS)
        capacity = b.capacity if b.capacity > 0 else 1
        ahead = b.queued + b.in_flight - capacity + 1
        latency = busy + (ahead / capacity * busy if ahead > 0 else 0.0) + (0.0 if b.loaded else load_penalty_s)
        if max_latency_ms is not None and latency * 1000.0 > max_latency_ms:
            excluded[bid] = f"expected latency {latency * 1000.0:.0f} ms over X-Max-Latency-Ms {max_latency_ms:g}"
            continue
        survivors.append((b, latency, busy))

    if fallback and survivors:
        preferred = [s for s in survivors if s[0].hardware in allowed]
        if preferred:
            if len(preferred) < len(survivors):
                kinds = _kinds(allowed)
                for b, _, _ in survivors:
                    if b.hardware not in allowed:
                        excluded[b.backend_id] = (f"hardware {b.hardware} serves in {mode.value} mode only when "
                                                  f"no {kinds} backend can")
                survivors = preferred
        else:
            rule = _FALLBACK_RULE.get(mode, rule)
            if spec.lowest_power_only:
                lowest = min(b.power_watts for b, _, _ in survivors)
                for b, _, _ in survivors:
                    if b.power_watts > lowest:
                        excluded[b.backend_id] = (f"power {b.power_watts:g} W above the lowest-power backend "
                                                  f"({lowest:g} W) of {mode.value} mode")
                survivors = [s for s in survivors if s[0].power_watts <= lowest]

    if not survivors:
        return Ranking(mode, (), excluded)

    best_latency = max(min(s[1] for s in survivors), _TINY)
    best_energy = max(min(s[0].power_watts * s[2] for s in survivors), _TINY)
    w_latency, w_energy = weights.w_latency, weights.w_energy
    w_load, w_residency = weights.w_load, weights.w_residency
    keyed = []
    for b, latency, busy in survivors:
        energy = b.power_watts * busy
        capacity = b.capacity if b.capacity > 0 else 1
        score = (w_latency * latency / best_latency + w_energy * energy / best_energy
                 + w_load * b.in_flight / capacity + (0.0 if b.loaded else w_residency))
        keyed.append((score, b.order, b.backend_id,
                      Ranked(b.backend_id, score, latency * 1000.0, b.power_watts, energy, rule)))
    keyed.sort(key=lambda item: item[:3])
    return Ranking(mode, tuple(item[3] for item in keyed), excluded)
