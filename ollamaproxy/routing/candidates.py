"""Candidate selection: the backends that may serve a request, with a reason for each exclusion (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ollamaproxy.backends.models import matches_any
from ollamaproxy.backends.registry import BackendState
from ollamaproxy.proxy.errors import ApiError


@dataclass(slots=True)
class Candidate:
    backend_id: str
    loaded: bool          # the model is resident there (per /api/ps or a recent request)
    order: int            # position in the config, the final tie-breaker
    cost: int = 1         # slots one request for this model takes on this backend
    translate: bool = False  # the backend speaks the other API: the request is translated
    reason: str = ""      # the scoring rule that placed it
    estimated_latency_ms: float | None = None
    estimated_power_w: float | None = None


@dataclass(frozen=True)
class CandidateSet:
    model: str
    candidates: tuple[Candidate, ...]
    reason: str                                   # "target-header" or "model-served"
    excluded: dict[str, str] = field(default_factory=dict)


def _serves(state: BackendState, model: str, pinned: bool) -> bool:
    inventory = state.inventory
    if inventory is not None:
        return model in inventory.models
    # Inventory not answered yet: trust the affinity patterns, else assume it might.
    return pinned or not state.config.models


def slot_cost(state: BackendState, model: str) -> int:
    """Slots one request for `model` occupies on this backend (`slot_cost` patterns; default 1)."""
    for pattern, cost in state.config.slot_cost.items():
        if matches_any(model, (pattern,)):
            return min(cost, state.config.max_concurrent)
    return 1


TRANSLATABLE_PATHS = frozenset({
    "/api/chat", "/api/generate", "/api/embed", "/api/embeddings",
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
})


def how_served(state: BackendState, api: str, path: str) -> bool | str:
    """False: the backend answers this API itself; True: through translation; a str: why it cannot."""
    kind = state.config.kind
    native = kind == api or (api == "openai" and kind == "ollama" and state.speaks_openai is not False)
    if native:
        return False
    if path in TRANSLATABLE_PATHS:
        return True
    return f"{kind} backend cannot answer {path} and it has no translation"


def select_candidates(model: str, api: str, states: Iterable[BackendState], target: str | None,
                      now: float, path: str = "") -> CandidateSet:
    """Backends able to serve `model` on `api` (natively or translated), loaded ones first; ApiError when none."""
    all_states = list(states)
    path = path or ("/api/chat" if api == "ollama" else "/v1/chat/completions")
    pinned_to = [s for s in all_states if s.config.models and matches_any(model, s.config.models)]
    pinned_ids = [s.id for s in pinned_to]

    if target is not None:
        return _targeted(model, api, path, all_states, target, pinned_ids, now)

    pool_ids = set(pinned_ids) if pinned_to else None
    excluded: dict[str, str] = {}
    serving: list[tuple[int, BackendState, bool]] = []
    for order, state in enumerate(all_states):
        if pool_ids is not None and state.id not in pool_ids:
            continue
        served = how_served(state, api, path)
        if isinstance(served, str):
            excluded[state.id] = served
        elif not _serves(state, model, bool(pinned_to)):
            excluded[state.id] = "does not have the model"
        else:
            serving.append((order, state, served))
    if not serving:
        raise _model_not_found(model, all_states, pinned_ids, excluded)

    candidates = []
    for order, state, translate in serving:
        if not state.available(now):
            excluded[state.id] = state.describe(now)
            continue
        loaded = state.inventory is not None and model in state.inventory.loaded
        candidates.append(Candidate(state.id, loaded, order, slot_cost(state, model), translate=translate))
    if not candidates:
        raise ApiError(503, "no_backend_available",
                       f"model {model!r} is served by backends that are not available now: "
                       + "; ".join(f"{k}: {v}" for k, v in excluded.items() if k in {st.id for _, st, _ in serving}),
                       headers={"Retry-After": "5"}, details={"excluded": excluded})
    candidates.sort(key=lambda c: (not c.loaded, c.translate, c.order))
    return CandidateSet(model, tuple(candidates), "model-served", excluded)


def _targeted(model: str, api: str, path: str, states: list[BackendState], target: str, pinned_ids: list[str],
              now: float) -> CandidateSet:
    by_id = {s.id: (order, s) for order, s in enumerate(states)}
    if target not in by_id:
        raise ApiError(400, "invalid_header",
                       f"X-Target-Backend: unknown backend {target!r}; configured backends: {', '.join(by_id)}")
    if pinned_ids and target not in pinned_ids:
        raise ApiError(409, "model_affinity_violation",
                       f"model {model!r} is pinned to backend(s) {', '.join(pinned_ids)} by affinity rules; "
                       f"X-Target-Backend {target!r} may not serve it",
                       details={"pinned_to": pinned_ids})
    order, state = by_id[target]
    served = how_served(state, api, path)
    if isinstance(served, str):
        raise ApiError(400, "invalid_header", f"X-Target-Backend: backend {target!r}: {served}")
    if not state.available(now):
        raise ApiError(503, "backend_unavailable", f"backend {target!r} is not available: {state.describe(now)}",
                       headers={"Retry-After": "5"})
    loaded = state.inventory is not None and model in state.inventory.loaded
    return CandidateSet(model, (Candidate(target, loaded, order, slot_cost(state, model), translate=served),),
                        "target-header")


def _model_not_found(model: str, states: list[BackendState], pinned_ids: list[str],
                     excluded: dict[str, str]) -> ApiError:
    available = sorted({m for s in states if s.inventory for m in s.inventory.models})
    message = f"model {model!r} not found on any backend"
    if pinned_ids:
        message += f" it is pinned to ({', '.join(pinned_ids)})"
    unable = [f"{k}: {v}" for k, v in excluded.items() if v != "does not have the model"]
    if unable:
        message += " that can answer this endpoint (" + "; ".join(unable) + ")"
    message += "; available models: " + (", ".join(available) if available else "none reported yet")
    return ApiError(404, "model_not_found", message, details={"available_models": available})
