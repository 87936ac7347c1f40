"""Scoring: which backend each efficiency mode prefers, hard constraints with reasons, header hints (pure)."""

from dataclasses import replace

import pytest

from ollamaproxy.modes import Mode
from ollamaproxy.routing.scoring import (
    MODEL_LOAD_PENALTY_S,
    BackendView,
    RequestView,
    rank_candidates,
)

# ---------------------------------------------------------------- the demo machine


def view(backend_id, hardware, tps, watts, ttft, order, **changes):
    base = BackendView(backend_id=backend_id, hardware=hardware, power_watts=watts, power_source="config",
                       ttft_s=ttft, tokens_per_second=tps, estimate_source="config", in_flight=0, capacity=1,
                       queued=0, loaded=True, order=order)
    return replace(base, **changes)


NPU = view("npu0", "npu", 12.0, 3.0, 0.4, 0)
IGPU = view("igpu0", "igpu", 30.0, 15.0, 0.25, 1)
NVIDIA = view("nvidia0", "nvidia", 120.0, 250.0, 0.08, 2)
CPU = view("cpu0", "cpu", 8.0, 45.0, 0.6, 3)
DEMO = (NPU, IGPU, NVIDIA, CPU)
REQUEST = RequestView("qwen3:4b")   # 256 expected tokens


def ids(ranking):
    return [r.backend_id for r in ranking.ranked]


def rank(mode, backends=DEMO, **request):
    return rank_candidates(mode, replace(REQUEST, **request), backends)


# ---------------------------------------------------------------- modes


def test_performance_prefers_the_fastest():
    ranking = rank(Mode.PERFORMANCE)
    assert ids(ranking) == ["nvidia0", "igpu0", "npu0", "cpu0"]
    best = ranking.ranked[0]
    assert best.reason == "mode-performance:lowest-latency"
    assert best.expected_latency_ms == pytest.approx((0.08 + 256 / 120) * 1000)
    assert best.expected_power_w == 250.0 and ranking.excluded == {}


def test_energy_is_power_times_busy_time():
    energy = {r.backend_id: r.expected_energy_j for r in rank(Mode.PERFORMANCE).ranked}
    assert energy["npu0"] == pytest.approx(3 * (0.4 + 256 / 12))       # ~65 J
    assert energy["igpu0"] == pytest.approx(15 * (0.25 + 256 / 30))    # ~132 J
    assert energy["nvidia0"] == pytest.approx(250 * (0.08 + 256 / 120))  # ~553 J
    assert energy["cpu0"] == pytest.approx(45 * (0.6 + 256 / 8))        # ~1467 J


def test_efficiency_prefers_least_energy_and_caps_power():
    ranking = rank(Mode.EFFICIENCY)
    assert ids(ranking) == ["npu0", "igpu0", "cpu0"]
    assert ranking.ranked[0].reason == "mode-efficiency:lowest-energy"
    assert ranking.excluded == {"nvidia0": "power 250 W over the 60 W cap of efficiency mode"}


def test_balanced_prefers_the_igpu_on_the_demo_machine():
    # igpu: 4x the best latency, 2x the best energy; nvidia: best latency, 8.5x energy; npu the reverse.
    ranking = rank(Mode.BALANCED)
    assert ids(ranking) == ["igpu0", "nvidia0", "npu0", "cpu0"]
    assert ranking.ranked[0].reason == "mode-balanced:latency-energy"


def test_quiet_keeps_the_dgpu_out_while_another_backend_can_serve():
    ranking = rank(Mode.QUIET)
    assert ids(ranking) == ["npu0", "igpu0", "cpu0"]
    assert ranking.excluded["nvidia0"] == (
        "hardware nvidia serves in quiet mode only when no cpu, igpu or npu backend can")
    assert ranking.ranked[0].reason == "mode-quiet:quiet-hardware"


def test_quiet_falls_back_to_the_dgpu_when_nothing_else_can_serve():
    hot = [replace(b, temperature_c=85.0) for b in (NPU, IGPU, CPU)]
    ranking = rank(Mode.QUIET, (*hot, replace(NVIDIA, temperature_c=60.0)))
    assert ids(ranking) == ["nvidia0"]
    assert ranking.ranked[0].reason == "mode-quiet:fallback-dgpu"
    assert ranking.excluded["npu0"] == "temperature 85 °C over the 70 °C cap of quiet mode"
    assert ids(rank(Mode.QUIET, (NVIDIA,))) == ["nvidia0"]


def test_quiet_temperature_cap_applies_to_the_fallback_too():
    ranking = rank(Mode.QUIET, (replace(NVIDIA, temperature_c=71.0),))
    assert ranking.ranked == () and "71 °C" in ranking.excluded["nvidia0"]


def test_ultra_efficiency_uses_only_the_npu():
    ranking = rank(Mode.ULTRA_EFFICIENCY)
    assert ids(ranking) == ["npu0"]
    assert ranking.ranked[0].reason == "mode-ultra-efficiency:npu-only"
    assert set(ranking.excluded) == {"igpu0", "nvidia0", "cpu0"}


def test_ultra_efficiency_queues_on_a_busy_npu_rather_than_escalating():
    ranking = rank(Mode.ULTRA_EFFICIENCY, (replace(NPU, in_flight=1, queued=5), IGPU, NVIDIA))
    assert ids(ranking) == ["npu0"]


def test_ultra_efficiency_without_npu_keeps_only_the_lowest_power_backend():
    ranking = rank(Mode.ULTRA_EFFICIENCY, (IGPU, NVIDIA, CPU))
    assert ids(ranking) == ["igpu0"]
    assert ranking.ranked[0].reason == "mode-ultra-efficiency:lowest-power"
    assert ranking.excluded["cpu0"] == "power 45 W above the lowest-power backend (15 W) of ultra-efficiency mode"
    twin = replace(IGPU, backend_id="igpu1", order=4)
    assert ids(rank(Mode.ULTRA_EFFICIENCY, (CPU, twin, IGPU))) == ["igpu0", "igpu1"]


def test_auto_and_unknown_modes_raise():
    with pytest.raises(ValueError, match="auto"):
        rank(Mode.AUTO)
    with pytest.raises(ValueError):
        rank_candidates("turbo", REQUEST, DEMO)


# ---------------------------------------------------------------- request headers


def test_max_power_header_excludes_with_reason():
    ranking = rank(Mode.PERFORMANCE, max_power_watts=20)
    assert ids(ranking) == ["igpu0", "npu0"]
    assert ranking.excluded["cpu0"] == "X-Max-Power-Watts 20: needs <= 20 W, backend estimates 45 W"
    assert set(ranking.excluded) == {"cpu0", "nvidia0"}


def test_max_latency_header_excludes_with_reason():
    ranking = rank(Mode.EFFICIENCY, max_latency_ms=10_000)
    assert ids(ranking) == ["igpu0"]
    assert ranking.excluded["npu0"] == "expected latency 21733 ms over X-Max-Latency-Ms 10000"


def test_latency_critical_flips_an_efficiency_choice_to_the_dgpu():
    ranking = rank(Mode.EFFICIENCY, latency_critical=True)
    assert ids(ranking)[0] == "nvidia0"
    assert ranking.ranked[0].reason == "header:latency-critical"
    assert ranking.excluded == {}


def test_latency_critical_does_not_lift_quiet_or_ultra_constraints():
    assert ids(rank(Mode.QUIET, latency_critical=True))[0] == "igpu0"
    assert ids(rank(Mode.ULTRA_EFFICIENCY, latency_critical=True)) == ["npu0"]


def test_power_efficient_hint_scores_with_efficiency_weights():
    ranking = rank(Mode.PERFORMANCE, power_efficient=True)
    assert ids(ranking)[0] == "npu0" and "nvidia0" in ids(ranking)     # weights only, no cap
    assert ranking.ranked[0].reason == "header:power-efficient"
    assert ids(rank(Mode.PERFORMANCE, power_efficient=True, latency_critical=True))[0] == "nvidia0"


def test_target_backend_leaves_only_that_backend_under_the_mode_rules():
    ranking = rank(Mode.QUIET, target_backend="nvidia0")
    assert ids(ranking) == ["nvidia0"]
    assert ranking.ranked[0].reason == "mode-quiet:fallback-dgpu"
    assert ranking.excluded["npu0"] == "X-Target-Backend selects nvidia0"
    targeted = rank(Mode.BALANCED, target_backend="cpu0")
    assert ids(targeted) == ["cpu0"] and targeted.ranked[0].reason == "header:target-backend"
    assert rank(Mode.EFFICIENCY, target_backend="nvidia0").ranked == ()


def test_nothing_left_is_an_empty_ranking_not_an_error():
    ranking = rank(Mode.PERFORMANCE, max_power_watts=1)
    assert ranking.ranked == () and ranking.best is None
    assert set(ranking.excluded) == {"npu0", "igpu0", "nvidia0", "cpu0"}
    assert rank(Mode.BALANCED, ()).ranked == ()


# ---------------------------------------------------------------- residency, load and ties


def test_loaded_model_is_preferred_when_otherwise_close():
    cold = replace(IGPU, backend_id="igpu-cold", loaded=False, order=0, tokens_per_second=31.0)
    warm = replace(IGPU, backend_id="igpu-warm", loaded=True, order=1)
    ranking = rank(Mode.BALANCED, (cold, warm))
    assert ids(ranking) == ["igpu-warm", "igpu-cold"]
    latency = {r.backend_id: r.expected_latency_ms for r in ranking.ranked}
    assert latency["igpu-cold"] == pytest.approx((MODEL_LOAD_PENALTY_S + 0.25 + 256 / 31) * 1000)


def test_a_full_backends_queue_wait_pushes_it_down():
    busy = replace(NVIDIA, in_flight=1, queued=3)
    ranking = rank(Mode.PERFORMANCE, (busy, IGPU))
    assert ids(ranking) == ["igpu0", "nvidia0"]
    service = 0.08 + 256 / 120
    assert ranking.ranked[1].expected_latency_ms == pytest.approx((4 * service + service) * 1000)


def test_free_slots_mean_no_queue_wait():
    roomy = replace(NVIDIA, in_flight=1, capacity=4, queued=2)
    ranked = rank(Mode.PERFORMANCE, (roomy,)).ranked[0]
    assert ranked.expected_latency_ms == pytest.approx((0.08 + 256 / 120) * 1000)


def test_in_flight_load_breaks_near_ties():
    loaded = replace(IGPU, backend_id="a", in_flight=1, capacity=2, order=0)
    idle = replace(IGPU, backend_id="b", order=1)
    assert ids(rank(Mode.BALANCED, (loaded, idle))) == ["b", "a"]


def test_exact_ties_go_to_config_order():
    first, second = replace(IGPU, backend_id="z", order=0), replace(IGPU, backend_id="a", order=1)
    assert ids(rank(Mode.BALANCED, (second, first))) == ["z", "a"]


def test_scores_are_normalised_to_the_best_survivor():
    ranking = rank(Mode.PERFORMANCE)
    assert ranking.ranked[0].score == pytest.approx(1.0)                # latency weight 1, best latency, loaded, idle
    assert ranking.mode is Mode.PERFORMANCE
