"""Candidate selection: inventory, affinity pins, X-Target-Backend, health (pure)."""

import pytest

from ollamaproxy.backends.health import Health
from ollamaproxy.backends.inventory import Inventory, LoadedModel
from ollamaproxy.backends.registry import BackendState
from ollamaproxy.config import BackendConfig
from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.candidates import select_candidates


def backend(ident, models=None, loaded=(), kind="ollama", health=Health.HEALTHY, pins=(), busy_until=0.0,
            enabled=True):
    state = BackendState(config=BackendConfig(id=ident, kind=kind, url="http://127.0.0.1:1", models=list(pins)))
    state.health = health
    state.busy_until = busy_until
    state.enabled = enabled
    if models is not None:
        state.inventory = Inventory(frozenset(models), {m: LoadedModel(m) for m in loaded})
    return state


def ids(choice):
    return [c.backend_id for c in choice.candidates]


def test_loaded_backends_first_then_config_order():
    states = [backend("a", ["m:latest"]), backend("b", ["m:latest"], loaded=["m:latest"]), backend("c", ["x:latest"])]
    choice = select_candidates("m:latest", "ollama", states, None, 0.0)
    assert ids(choice) == ["b", "a"]
    assert choice.excluded == {"c": "does not have the model"}


def test_unhealthy_and_disabled_are_excluded_with_reasons():
    states = [backend("a", ["m:latest"], health=Health.DOWN), backend("b", ["m:latest"], health=Health.MISCONFIGURED),
              backend("c", ["m:latest"], enabled=False), backend("d", ["m:latest"])]
    choice = select_candidates("m:latest", "ollama", states, None, 0.0)
    assert ids(choice) == ["d"]
    assert choice.excluded["a"].startswith("down") and choice.excluded["b"].startswith("misconfigured")
    assert choice.excluded["c"] == "disabled"


def test_busy_backend_returns_after_retry_after():
    states = [backend("a", ["m:latest"], health=Health.BUSY, busy_until=10.0)]
    with pytest.raises(ApiError) as caught:
        select_candidates("m:latest", "ollama", states, None, 5.0)
    assert caught.value.status == 503 and "busy for 5s" in caught.value.message
    assert ids(select_candidates("m:latest", "ollama", states, None, 10.0)) == ["a"]


def test_unknown_model_lists_available():
    states = [backend("a", ["m:latest", "n:1b"]), backend("o", ["gpt:latest"], kind="openai")]
    with pytest.raises(ApiError) as caught:
        select_candidates("zz:latest", "ollama", states, None, 0.0)
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert caught.value.details["available_models"] == ["gpt:latest", "m:latest", "n:1b"]


def test_other_api_backends_serve_through_translation():
    states = [backend("o", ["gpt:latest"], kind="openai"), backend("old", ["gpt:latest"])]
    states[1].speaks_openai = False  # an older Ollama without /v1/*
    native = select_candidates("gpt:latest", "openai", states, None, 0.0, "/v1/chat/completions")
    assert [(c.backend_id, c.translate) for c in native.candidates] == [("o", False), ("old", True)]
    via_ollama = select_candidates("gpt:latest", "ollama", states, None, 0.0, "/api/chat")
    assert [(c.backend_id, c.translate) for c in via_ollama.candidates] == [("old", False), ("o", True)]
    with pytest.raises(ApiError) as caught:  # /api/show has no OpenAI counterpart
        select_candidates("gpt:latest", "ollama", states[:1], None, 0.0, "/api/show")
    assert caught.value.status == 404 and "cannot answer /api/show" in caught.value.message


def test_inventory_unknown_falls_back_to_affinity_patterns():
    states = [backend("a", None, pins=["qwen3*"]), backend("b", None)]
    assert ids(select_candidates("qwen3:0.6b", "ollama", states, None, 0.0)) == ["a"]
    # Not pinned anywhere: an unprobed backend without patterns may serve it.
    assert ids(select_candidates("llama3:latest", "ollama", states, None, 0.0)) == ["b"]


def test_pinned_model_never_goes_elsewhere():
    states = [backend("gpu", ["qwen3:8b"], pins=["qwen3*"]), backend("cpu", ["qwen3:8b"])]
    assert ids(select_candidates("qwen3:8b", "ollama", states, None, 0.0)) == ["gpu"]
    states[0].health = Health.DOWN
    with pytest.raises(ApiError) as caught:
        select_candidates("qwen3:8b", "ollama", states, None, 0.0)
    assert caught.value.status == 503  # pinned backend down: no silent fallback to cpu


def test_target_header_breaking_a_pin_is_409():
    states = [backend("gpu", ["qwen3:8b"], pins=["qwen3*"]), backend("cpu", ["qwen3:8b"])]
    with pytest.raises(ApiError) as caught:
        select_candidates("qwen3:8b", "ollama", states, "cpu", 0.0)
    assert caught.value.status == 409 and caught.value.code == "model_affinity_violation"
    assert "gpu" in caught.value.message
    assert ids(select_candidates("qwen3:8b", "ollama", states, "gpu", 0.0)) == ["gpu"]


def test_target_header_unknown_or_wrong_kind_is_400():
    states = [backend("a", ["m:latest"]), backend("o", ["m:latest"], kind="openai")]
    with pytest.raises(ApiError) as caught:
        select_candidates("m:latest", "ollama", states, "nope", 0.0)
    assert caught.value.status == 400 and "X-Target-Backend" in caught.value.message and "a, o" in caught.value.message
    with pytest.raises(ApiError) as caught:
        select_candidates("m:latest", "ollama", states, "o", 0.0, "/api/show")
    assert caught.value.status == 400 and "cannot answer /api/show" in caught.value.message
