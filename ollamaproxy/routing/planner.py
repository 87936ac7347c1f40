"""Planner: turns one request into a ranked ticket (candidates → mode → scoring) and explains decisions."""

from __future__ import annotations

from dataclasses import dataclass

from ollamaproxy.backends.models import canonical_model
from ollamaproxy.backends.registry import Registry
from ollamaproxy.modes import Mode
from ollamaproxy.policy.efficiency import EffectiveMode, EfficiencyPolicy
from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.candidates import Candidate, select_candidates
from ollamaproxy.routing.estimates import Estimates
from ollamaproxy.routing.headers import RoutingHints
from ollamaproxy.routing.queue import parse_priority
from ollamaproxy.routing.scheduler import Scheduler, Ticket
from ollamaproxy.routing.scoring import BackendView, RequestView, rank_candidates
from ollamaproxy.safety import Safety

DEFAULT_EXPECTED_TOKENS = 256


@dataclass(frozen=True)
class Plan:
    model: str
    mode: EffectiveMode
    ticket: Ticket
    excluded: dict[str, str]


def expected_tokens(payload: dict, media_type: str, path: str) -> int:
    """Tokens the request will likely generate: its own limit when it sets one, else a default."""
    if media_type == "embedding" or "embed" in path or path == "/api/show":
        return 1
    options = payload.get("options")
    for value in ((options or {}).get("num_predict") if isinstance(options, dict) else None,
                  payload.get("max_tokens"), payload.get("max_completion_tokens")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return DEFAULT_EXPECTED_TOKENS


class Planner:
    """Reads registry, scheduler, estimates and the effective mode (advisory reads) to rank candidates."""

    def __init__(self, registry: Registry, scheduler: Scheduler, estimates: Estimates, efficiency: EfficiencyPolicy,
                 safety: Safety | None = None):
        self.registry = registry
        self.scheduler = scheduler
        self.estimates = estimates
        self.efficiency = efficiency
        self.safety = safety

    def _view(self, candidate: Candidate, model: str) -> BackendView:
        state = self.registry.states[candidate.backend_id]
        config = state.config
        ttft, ttft_source = self.estimates.ttft(config.id, model, config.latency_ms / 1000.0)
        tps, tps_source = self.estimates.tokens_per_second(config.id, model, config.tokens_per_second)
        source = "measured" if "measured" in (ttft_source, tps_source) else "config"
        power, power_source, temperature = config.power_watts, "config", None
        if self.safety is not None:
            live_power, temperature = self.safety.backend_live(config.id)
            if live_power is not None and live_power > power:
                # Drawing more than its estimate already: expect at least that while it works.
                power, power_source = live_power, "measured"
        return BackendView(
            backend_id=config.id, hardware=config.hardware, power_watts=power, power_source=power_source,
            temperature_c=temperature,
            ttft_s=ttft, tokens_per_second=tps, estimate_source=source,
            in_flight=self.scheduler.used[config.id], capacity=self.scheduler.capacity[config.id],
            queued=self.scheduler.queued_for(config.id), loaded=candidate.loaded, order=candidate.order,
        )

    def plan(self, model: str, api: str, hints: RoutingHints, tokens: int,
             skip: frozenset[str] = frozenset(), path: str = "") -> Plan:
        """Rank the backends that may serve this request now; raises ApiError when none may."""
        registry = self.registry
        choice = select_candidates(model, api, registry.states.values(), hints.target_backend, registry.clock(),
                                   path)
        candidates = {c.backend_id: c for c in choice.candidates if c.backend_id not in skip}
        excluded = dict(choice.excluded)
        if self.safety is not None:
            blocked = {bid: self.safety.blocked(bid) for bid in candidates}
            if any(why is None for why in blocked.values()):
                # Breakers hold new work off a backend while another can serve it...
                for bid, why in blocked.items():
                    if why is not None:
                        excluded[bid] = f"{why[0].value}: {why[1]}"
                        del candidates[bid]
            # ...and when every candidate is held, the request waits in the queue until one closes.
        effective = self.efficiency.effective()
        targeted = choice.reason == "target-header"
        request = RequestView(model=model, expected_tokens=tokens, latency_critical=hints.latency_critical,
                              power_efficient=hints.power_efficient, max_latency_ms=hints.max_latency_ms,
                              max_power_watts=hints.max_power_watts)
        # An explicit X-Target-Backend overrides the mode's preferences; header limits still hold.
        mode = Mode.PERFORMANCE if targeted else effective.mode
        ranking = rank_candidates(mode, request, [self._view(c, model) for c in candidates.values()])
        excluded.update(ranking.excluded)
        if not ranking.ranked:
            if not candidates:
                raise ApiError(503, "no_backend_available", "no backend is left to try",
                               headers={"Retry-After": "5"}, details={"excluded": excluded})
            raise ApiError(
                503, "constraints_unsatisfiable",
                f"no backend can serve {model!r} under mode {effective.mode.value} and the request's limits: "
                + "; ".join(f"{backend}: {why}" for backend, why in ranking.excluded.items()),
                headers={"Retry-After": "5"}, details={"mode": effective.mode.value, "excluded": excluded})
        ranked = []
        for r in ranking.ranked:
            base = candidates[r.backend_id]
            ranked.append(Candidate(base.backend_id, base.loaded, base.order, base.cost, base.translate,
                                    reason="target-header" if targeted else r.reason,
                                    estimated_latency_ms=r.expected_latency_ms,
                                    estimated_power_w=r.expected_power_w))
        ticket = Ticket(tuple(ranked), hints.priority, hints.client_id or "", model)
        return Plan(model, effective, ticket, excluded)

    def explain(self, description: dict) -> dict:
        """The decision for a described request, with reasons, and no side effects on any state.

        `description` keys: model (required), api ("ollama" | "openai"), target_backend, priority,
        latency_critical, power_efficient, max_latency_ms, max_power_watts, expected_tokens, client_id.
        """
        model = description.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ApiError(400, "missing_model", "'model' is required: name the model to explain")
        api = description.get("api", "ollama")
        if api not in ("ollama", "openai"):
            raise ApiError(400, "invalid_api", f"'api' must be 'ollama' or 'openai', got {api!r}")
        try:
            priority = parse_priority(str(description.get("priority", "normal")))
        except ValueError as error:
            raise ApiError(400, "invalid_priority", str(error)) from None
        hints = RoutingHints(
            request_id="explain", client_id=description.get("client_id") or None,
            target_backend=description.get("target_backend") or None,
            latency_critical=bool(description.get("latency_critical", False)),
            power_efficient=bool(description.get("power_efficient", False)),
            max_latency_ms=_positive_or_none(description.get("max_latency_ms"), "max_latency_ms"),
            max_power_watts=_positive_or_none(description.get("max_power_watts"), "max_power_watts"),
            priority=priority)
        tokens = int(description.get("expected_tokens") or DEFAULT_EXPECTED_TOKENS)
        canonical = canonical_model(model)
        try:
            plan = self.plan(canonical, api, hints, tokens)
        except ApiError as error:
            return {"model": canonical, "backend": None, "decision": "reject", "status": error.status,
                    "reason": error.code, "message": error.message, "details": error.details or {}}
        placement = self.scheduler.place(plan.ticket)
        first = plan.ticket.ranked[0]
        chosen = placement.candidate
        return {
            "model": canonical,
            "mode": plan.mode.mode.value,
            "mode_rule": plan.mode.rule,
            "decision": "start" if chosen is not None else "queue",
            "backend": chosen.backend_id if chosen is not None else first.backend_id,
            "reason": chosen.reason if chosen is not None and chosen.reason else placement.reason,
            "waits_for": list(placement.waits_for),
            "estimated_latency_ms": (chosen or first).estimated_latency_ms,
            "estimated_power_w": (chosen or first).estimated_power_w,
            "ranked": [{"backend": c.backend_id, "reason": c.reason, "loaded": c.loaded,
                        "estimated_latency_ms": c.estimated_latency_ms, "estimated_power_w": c.estimated_power_w}
                       for c in plan.ticket.ranked],
            "excluded": plan.excluded,
        }


def _positive_or_none(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ApiError(400, "invalid_value", f"{name!r} must be a positive number, got {value!r}")
    return float(value)
