"""Latency estimates: config until measured, TTFT and tokens/second tracked apart, EWMA math (pure)."""

import math

import pytest

from ollamaproxy.routing.estimates import Estimates, SampleCounts, expected_latency_s


def test_config_values_before_any_sample():
    estimates = Estimates()
    assert estimates.ttft("npu0", "m", 0.4) == (0.4, "config")
    assert estimates.tokens_per_second("npu0", "m", 12.0) == (12.0, "config")
    assert estimates.sample_counts("npu0", "m") == SampleCounts(0, 0)


def test_measured_after_samples():
    estimates = Estimates()
    estimates.record("npu0", "m", 0.5, 100, 10.0)
    assert estimates.ttft("npu0", "m", 0.4) == (0.5, "measured")
    assert estimates.tokens_per_second("npu0", "m", 12.0) == (10.0, "measured")


def test_ttft_and_rate_are_tracked_apart():
    estimates = Estimates()
    estimates.record("igpu0", "m", 0.25, None, None)
    assert estimates.ttft("igpu0", "m", 1.0) == (0.25, "measured")
    assert estimates.tokens_per_second("igpu0", "m", 30.0) == (30.0, "config")
    estimates.record("igpu0", "m", None, 60, 2.0)
    assert estimates.ttft("igpu0", "m", 1.0) == (0.25, "measured")
    assert estimates.tokens_per_second("igpu0", "m", 99.0) == (30.0, "measured")
    assert estimates.sample_counts("igpu0", "m") == SampleCounts(1, 1)


def test_ewma_math():
    estimates = Estimates(alpha=0.5)
    for ttft, tokens, seconds in [(1.0, 10, 1.0), (2.0, 20, 1.0), (4.0, 40, 1.0)]:
        estimates.record("b", "m", ttft, tokens, seconds)
    # 1 -> 0.5*2 + 0.5*1 = 1.5 -> 0.5*4 + 0.5*1.5 = 2.75; the rate the same way, ten times larger.
    assert estimates.ttft("b", "m", 0.0) == (pytest.approx(2.75), "measured")
    assert estimates.tokens_per_second("b", "m", 0.0) == (pytest.approx(27.5), "measured")


def test_default_alpha_is_0_3():
    estimates = Estimates()
    estimates.record("b", "m", 1.0, None, None)
    estimates.record("b", "m", 2.0, None, None)
    assert estimates.ttft("b", "m", 0.0)[0] == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)


@pytest.mark.parametrize("ttft, tokens, seconds", [
    (None, 1, 1.0), (None, 0, 1.0), (None, 50, 0.0), (None, 50, -1.0), (None, None, 1.0), (None, 50, None),
    (-0.1, None, None), (math.nan, None, None), (math.inf, None, None), (None, 50, math.inf),
])
def test_bad_samples_are_ignored(ttft, tokens, seconds):
    estimates = Estimates()
    estimates.record("b", "m", ttft, tokens, seconds)
    assert estimates.sample_counts("b", "m") == SampleCounts(0, 0)
    assert estimates.ttft("b", "m", 0.7) == (0.7, "config")
    assert estimates.tokens_per_second("b", "m", 7.0) == (7.0, "config")


def test_other_models_on_the_same_backend_do_not_count_as_measured():
    estimates = Estimates()
    estimates.record("nv0", "small", 0.05, 400, 1.0)
    assert estimates.ttft("nv0", "large", 0.3) == (0.3, "config")
    assert estimates.tokens_per_second("nv0", "large", 40.0) == (40.0, "config")
    assert estimates.ttft("other", "small", 0.3) == (0.3, "config")


def test_forget_backend_drops_only_its_estimates():
    estimates = Estimates()
    estimates.record("a", "m", 0.1, None, None)
    estimates.record("b", "m", 0.2, None, None)
    estimates.forget_backend("a")
    assert estimates.ttft("a", "m", 9.0) == (9.0, "config")
    assert estimates.ttft("b", "m", 9.0) == (0.2, "measured")


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_alpha_must_be_in_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        Estimates(alpha=alpha)


def test_expected_latency():
    assert expected_latency_s(0.4, 12.0, 256) == pytest.approx(0.4 + 256 / 12)
    assert expected_latency_s(0.1, 10.0, 0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        expected_latency_s(0.1, 0.0, 10)
