"""Prometheus metrics: request counters and latency histograms fed from request-log records, plus live gauges."""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from ollamaproxy.policy.breakers import ReasonCode

if TYPE_CHECKING:
    from ollamaproxy.control import Control

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; local inference spans milliseconds (embeddings) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MAX_MODELS = 100
MAX_OUTCOMES = 50
OTHER = "other"
NONE = "none"


class Histogram:
    """Bucket counts (non-cumulative while observing, cumulative when rendered), sum and count."""

    __slots__ = ("count", "counts", "sum")

    def __init__(self, buckets: int):
        self.counts = [0] * (buckets + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0


class Metrics:
    """Counts requests and latencies from request-log records and renders the text exposition format 0.0.4.

    Label cardinality stays bounded: at most `max_models` distinct model names (the rest count
    as "other"), at most MAX_OUTCOMES outcome codes; backends come from the config.
    """

    def __init__(self, *, max_models: int = MAX_MODELS, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = tuple(sorted(buckets))
        self.max_models = max_models
        self._models: set[str] = set()
        self._outcomes: set[str] = set()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.outcomes: dict[str, int] = {}
        self.duration: dict[tuple[str, str], Histogram] = {}
        self.ttfb: dict[tuple[str, str], Histogram] = {}
        self.queued: dict[str, Histogram] = {}

    # ---- input -----------------------------------------------------------------------

    def _model_label(self, model: Any) -> str:
        if not model:
            return NONE
        model = str(model)
        if model in self._models:
            return model
        if len(self._models) < self.max_models:
            self._models.add(model)
            return model
        return OTHER

    def _outcome_label(self, outcome: Any) -> str:
        outcome = str(outcome or "ok")
        if outcome in self._outcomes:
            return outcome
        if len(self._outcomes) < MAX_OUTCOMES:
            self._outcomes.add(outcome)
            return outcome
        return OTHER

    def _observe_ms(self, table: dict, key, value: Any) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            return
        histogram = table.get(key)
        if histogram is None:
            histogram = table[key] = Histogram(len(self.buckets))
        seconds = value / 1000.0
        histogram.counts[bisect_left(self.buckets, seconds)] += 1
        histogram.sum += seconds
        histogram.count += 1

    def observe(self, record: dict) -> None:
        """Count one finished request (a request-log record: backend, model, status, *_ms, outcome)."""
        backend = str(record.get("backend") or NONE)
        model = self._model_label(record.get("model"))
        status = record.get("status")
        status_label = str(status) if isinstance(status, int) else "0"
        key = (backend, model, status_label)
        self.requests[key] = self.requests.get(key, 0) + 1
        outcome = self._outcome_label(record.get("outcome"))
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        self._observe_ms(self.duration, (backend, model), record.get("total_ms"))
        if backend != NONE:
            self._observe_ms(self.ttfb, (backend, model), record.get("ttfb_ms"))
            self._observe_ms(self.queued, backend, record.get("queued_ms"))

    # ---- output ----------------------------------------------------------------------

    def render(self, control: Control | None = None) -> str:
        """The whole exposition: request metrics, then live gauges read through `control`."""
        out = _Writer()
        out.family("ollamaproxy_requests_total", "counter", "Finished requests by backend, model and HTTP status.")
        for (backend, model, status), value in sorted(self.requests.items()):
            out.sample("ollamaproxy_requests_total", {"backend": backend, "model": model, "status": status}, value)
        out.family("ollamaproxy_request_outcomes_total", "counter", "Finished requests by outcome code.")
        for outcome, value in sorted(self.outcomes.items()):
            out.sample("ollamaproxy_request_outcomes_total", {"outcome": outcome}, value)
        self._histograms(out, "ollamaproxy_request_duration_seconds", "Total request time, arrival to last byte.",
                         {("backend", "model"): self.duration})
        self._histograms(out, "ollamaproxy_time_to_first_byte_seconds", "Arrival to first response byte.",
                         {("backend", "model"): self.ttfb})
        self._histograms(out, "ollamaproxy_queue_wait_seconds", "Time spent waiting for a slot.",
                         {("backend",): self.queued})
        if control is not None:
            _render_live(out, control)
        return out.text()

    def _histograms(self, out: _Writer, name: str, help_text: str, tables: dict) -> None:
        out.family(name, "histogram", help_text)
        for label_names, table in tables.items():
            for key, histogram in sorted(table.items()):
                values = key if isinstance(key, tuple) else (key,)
                labels = dict(zip(label_names, values))
                cumulative = 0
                for bound, count in zip(self.buckets, histogram.counts):
                    cumulative += count
                    out.sample(name + "_bucket", {**labels, "le": _number(bound)}, cumulative)
                out.sample(name + "_bucket", {**labels, "le": "+Inf"}, histogram.count)
                out.sample(name + "_sum", labels, histogram.sum)
                out.sample(name + "_count", labels, histogram.count)


def _render_live(out: _Writer, control: Control) -> None:
    routing = control.routing()
    out.gauge("ollamaproxy_queue_depth", "Requests waiting for a slot.", routing["queue_depth"])
    out.gauge("ollamaproxy_in_flight", "Requests running on a backend.", routing["in_flight"])
    out.gauge("ollamaproxy_paused", "1 while all new work is paused.", int(bool(routing["paused"])))

    out.family("ollamaproxy_mode", "gauge", "The user's chosen efficiency mode (info-style, value 1).")
    out.sample("ollamaproxy_mode", {"mode": control.mode()}, 1)
    out.family("ollamaproxy_effective_mode", "gauge", "The efficiency mode in force (info-style, value 1).")
    out.sample("ollamaproxy_effective_mode", {"mode": control.effective_mode()}, 1)
    out.gauge("ollamaproxy_mode_holds", "Active mode holds.", len(control.holds()))

    backends = control.backends()
    families = (
        ("ollamaproxy_backend_up", "1 when the backend is healthy and enabled.",
         lambda b: int(b["health"] == "healthy")),
        ("ollamaproxy_backend_enabled", "1 when the backend is enabled.", lambda b: int(bool(b["enabled"]))),
        ("ollamaproxy_backend_in_flight", "Requests running on the backend.", lambda b: b["in_flight"]),
        ("ollamaproxy_backend_capacity", "Concurrency slots of the backend.", lambda b: b["capacity"]),
        ("ollamaproxy_backend_queued", "Requests waiting that this backend could serve.", lambda b: b["queued"]),
        ("ollamaproxy_backend_power_watts", "Live power draw of the backend's devices.",
         lambda b: None if b["power_watts"] < 0 else b["power_watts"]),
        ("ollamaproxy_backend_temperature_celsius", "Hottest temperature of the backend's devices.",
         lambda b: None if b["temperature_celsius"] < 0 else b["temperature_celsius"]),
    )
    for name, help_text, value_of in families:
        out.family(name, "gauge", help_text)
        for backend in backends:
            value = value_of(backend)
            if value is not None:
                out.sample(name, {"backend": backend["id"]}, value)
    out.family("ollamaproxy_backend_info", "gauge", "Backend kind, hardware and health (info-style, value 1).")
    for backend in backends:
        out.sample("ollamaproxy_backend_info", {"backend": backend["id"], "kind": backend["kind"],
                                                "hardware": backend["hardware"], "health": backend["health"]}, 1)
    out.family("ollamaproxy_backend_breaker_open", "gauge", "1 when a breaker of this kind holds the backend.")
    for backend in backends:
        for code in ReasonCode:
            out.sample("ollamaproxy_backend_breaker_open", {"backend": backend["id"], "breaker": code.value},
                       int(backend["breaker"] == code.value))

    devices = control.devices()
    device_families = (
        ("ollamaproxy_device_temperature_celsius", "Device temperature.", "temperature_celsius"),
        ("ollamaproxy_device_power_watts", "Device power draw.", "power_watts"),
        ("ollamaproxy_device_fan_percent", "Device fan speed.", "fan_percent"),
    )
    for name, help_text, field in device_families:
        out.family(name, "gauge", help_text)
        for device in devices:
            if device[field] >= 0:
                out.sample(name, {"device": device["id"], "kind": device["kind"]}, device[field])
    out.family("ollamaproxy_device_throttling", "gauge", "1 while the device reports throttling.")
    for device in devices:
        out.sample("ollamaproxy_device_throttling", {"device": device["id"], "kind": device["kind"]},
                   int(bool(device["throttling"])))

    system = control.system()
    if system["total_power_watts"] >= 0:
        out.gauge("ollamaproxy_power_draw_watts", "Combined power draw of the monitored devices.",
                  system["total_power_watts"])
    if system["power_budget_watts"] > 0:
        out.gauge("ollamaproxy_power_budget_watts", "Configured combined power budget.", system["power_budget_watts"])
    out.gauge("ollamaproxy_power_breaker_open", "1 while the power-budget breaker is open.",
              int(system["power_breaker_open"]))
    out.gauge("ollamaproxy_on_battery", "1 while running on battery.", int(system["on_battery"]))
    if system["battery_percent"] >= 0:
        out.gauge("ollamaproxy_battery_percent", "Battery charge.", system["battery_percent"])


class _Writer:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        if labels:
            inner = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
            self._lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self._lines.append(f"{name} {_number(value)}")

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "gauge", help_text)
        self.sample(name, {}, value)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]
