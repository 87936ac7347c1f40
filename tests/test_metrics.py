"""Metrics: request counters and histograms from request-log records, bounded labels, valid exposition text."""

import pytest

from ollamaproxy.metrics import LATENCY_BUCKETS, Metrics
from ollamaproxy.policy.breakers import ReasonCode

parser = pytest.importorskip("prometheus_client.parser", reason="pip install prometheus_client")

from conftest import backend_entry


def families(text: str) -> dict:
    return {family.name: family for family in parser.text_string_to_metric_families(text)}


def samples(text: str, name: str) -> list:
    return [s for family in parser.text_string_to_metric_families(text) for s in family.samples if s.name == name]


def record(**fields) -> dict:
    base = {"backend": "gpu0", "model": "llama3.2:1b", "status": 200, "total_ms": 120.0, "ttfb_ms": 30.0,
            "queued_ms": 0.0, "outcome": "ok"}
    base.update(fields)
    return base


def test_counts_requests_by_backend_model_and_status():
    metrics = Metrics()
    for _ in range(3):
        metrics.observe(record())
    metrics.observe(record(status=503, outcome="backend_failed"))
    metrics.observe(record(backend=None, model="nope", status=404, outcome="model_not_found", ttfb_ms=None))
    text = metrics.render()
    counts = {(s.labels["backend"], s.labels["model"], s.labels["status"]): s.value
              for s in samples(text, "ollamaproxy_requests_total")}
    assert counts == {("gpu0", "llama3.2:1b", "200"): 3, ("gpu0", "llama3.2:1b", "503"): 1,
                      ("none", "nope", "404"): 1}
    outcomes = {s.labels["outcome"]: s.value for s in samples(text, "ollamaproxy_request_outcomes_total")}
    assert outcomes == {"ok": 3, "backend_failed": 1, "model_not_found": 1}
    assert families(text)["ollamaproxy_requests"].type == "counter"


def test_latency_histogram_buckets_are_cumulative_in_seconds():
    metrics = Metrics()
    for total in (4.0, 40.0, 400.0, 4000.0, 4_000_000.0):  # ms; the last is beyond every bucket
        metrics.observe(record(total_ms=total))
    text = metrics.render()
    family = families(text)["ollamaproxy_request_duration_seconds"]
    assert family.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets["0.005"] == 1 and buckets["0.05"] == 2 and buckets["0.5"] == 3 and buckets["5.0"] == 4
    assert buckets["+Inf"] == 5 and len(buckets) == len(LATENCY_BUCKETS) + 1
    values = [buckets[key] for key in sorted(buckets, key=lambda k: float(k))]
    assert values == sorted(values)
    count = next(s.value for s in family.samples if s.name.endswith("_count"))
    total = next(s.value for s in family.samples if s.name.endswith("_sum"))
    assert count == 5 and total == pytest.approx(4004.444)


def test_model_label_cardinality_is_capped():
    metrics = Metrics(max_models=100)
    for index in range(250):
        metrics.observe(record(model=f"model-{index}"))
    text = metrics.render()
    models = {s.labels["model"] for s in samples(text, "ollamaproxy_requests_total")}
    assert len(models) == 101 and "other" in models
    other = [s.value for s in samples(text, "ollamaproxy_requests_total") if s.labels["model"] == "other"]
    assert other == [150]
    assert sum(s.value for s in samples(text, "ollamaproxy_requests_total")) == 250


def test_label_values_are_escaped():
    metrics = Metrics()
    metrics.observe(record(model='we"ird\\name\nwith newline'))
    text = metrics.render()
    models = {s.labels["model"] for s in samples(text, "ollamaproxy_requests_total")}
    assert models == {'we"ird\\name\nwith newline'}


def test_records_with_missing_or_bad_numbers_still_count():
    metrics = Metrics()
    metrics.observe({"backend": None, "model": None, "status": None, "total_ms": None, "outcome": None})
    metrics.observe(record(total_ms="fast", ttfb_ms=float("nan"), queued_ms=-1))
    text = metrics.render()
    assert sum(s.value for s in samples(text, "ollamaproxy_requests_total")) == 2
    assert samples(text, "ollamaproxy_request_duration_seconds_count") == []  # no valid durations


async def test_render_with_a_live_router_parses_and_has_the_gauges(sims, routers, http):
    sim = await sims("gpu0", ["tiny:1b"])
    handle = await routers([backend_entry(sim, hardware="nvidia")], power={"budget_watts": 300})
    for _ in range(2):
        async with http.post(f"{handle.url}/api/generate", json={"model": "tiny:1b", "prompt": "x",
                                                                 "stream": False}) as resp:
            assert resp.status == 200
    metrics = Metrics()
    for line in handle.log_lines():
        metrics.observe(line)
    text = metrics.render(handle.router.control)
    found = families(text)
    assert found["ollamaproxy_mode"].samples[0].labels == {"mode": "balanced"}
    assert found["ollamaproxy_mode"].samples[0].value == 1
    assert found["ollamaproxy_queue_depth"].samples[0].value == 0
    assert found["ollamaproxy_in_flight"].samples[0].value == 0
    assert {s.labels["backend"] for s in found["ollamaproxy_backend_up"].samples} == {"gpu0"}
    breakers = {s.labels["breaker"]: s.value for s in found["ollamaproxy_backend_breaker_open"].samples}
    assert breakers == {code.value: 0 for code in ReasonCode}
    assert found["ollamaproxy_power_budget_watts"].samples[0].value == 300
    counts = [s for s in found["ollamaproxy_requests"].samples if s.name == "ollamaproxy_requests_total"]
    assert [(s.labels, s.value) for s in counts] == [({"backend": "gpu0", "model": "tiny:1b", "status": "200"}, 2)]
    handle.router.control.pause("gpu0", "test")
    breakers = {s.labels["breaker"]: s.value
                for s in samples(metrics.render(handle.router.control), "ollamaproxy_backend_breaker_open")}
    assert breakers["paused"] == 1
    handle.router.control.resume("gpu0")
