"""Health classification and probe backoff (pure)."""

from ollamaproxy.backends.health import Health, classify_status, next_probe_delay, parse_retry_after
from ollamaproxy.backends.models import canonical_model, matches_any


def test_statuses_map_to_distinct_states():
    assert classify_status(200).health is Health.HEALTHY
    assert classify_status(401).health is Health.MISCONFIGURED
    assert classify_status(403).health is Health.MISCONFIGURED
    busy = classify_status(503, "7")
    assert busy.health is Health.BUSY and busy.retry_after_seconds == 7
    assert classify_status(429).health is Health.BUSY
    assert classify_status(500).health is Health.DOWN


def test_retry_after_forms():
    assert parse_retry_after("12", 0) == 12
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480.0) == 10
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


def test_backoff_doubles_while_down_and_is_capped():
    delays = [next_probe_delay(Health.DOWN, n, 5.0, 60.0) for n in range(1, 7)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert next_probe_delay(Health.HEALTHY, 0, 5.0, 60.0) == 5.0
    assert next_probe_delay(Health.BUSY, 1, 5.0, 60.0, retry_after=3.0) == 3.0
    assert next_probe_delay(Health.BUSY, 1, 5.0, 60.0, retry_after=600.0) == 60.0


def test_model_names_and_patterns():
    assert canonical_model(" Llama3.2 ") == "llama3.2:latest"
    assert canonical_model("qwen3:0.6b") == "qwen3:0.6b"
    assert canonical_model("hf.co/org/model") == "hf.co/org/model:latest"
    assert matches_any("qwen3:0.6b", ["qwen3*"])
    assert matches_any("llama3.2:latest", ["llama3.2"])
    assert not matches_any("llama3.2:1b", ["llama3.2"])
    assert not matches_any("mistral:latest", ["qwen3*", "llama*"])
