"""Cost of one scheduling decision and of enqueue/dequeue with 4 backends and 10, 1,000, 10,000 queued.

A "decision" is what the proxy does per request before forwarding: plan (candidates → mode →
scoring over 4 backends) plus the scheduler's select-and-reserve, here against a wait queue
already holding N requests. Enqueue/dequeue is one push into the WaitQueue and one grant out of
it at that depth. Targets: a decision ≤ 50 µs at 1,000 queued, growing no faster than O(log n)
(the 10,000 / 1,000 ratio must stay well under 10×, the linear growth).

    .venv/bin/python bench/scheduler_decision.py [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from ollamaproxy.backends.health import Health
from ollamaproxy.backends.inventory import Inventory, LoadedModel
from ollamaproxy.config import parse_config
from ollamaproxy.modes import Mode
from ollamaproxy.policy.efficiency import EfficiencyPolicy, default_auto_inputs
from ollamaproxy.backends.registry import Registry
from ollamaproxy.routing.estimates import Estimates
from ollamaproxy.routing.headers import RoutingHints
from ollamaproxy.routing.planner import Planner
from ollamaproxy.routing.queue import Priority, QueueEntry
from ollamaproxy.routing.scheduler import Scheduler, Ticket

MODEL = "llama3.2:1b"
DEPTHS = (10, 1_000, 10_000)
TARGET_DECISION_US = 50.0


def build(depth: int):
    config = parse_config({"backends": [
        {"id": "npu0", "url": "http://127.0.0.1:1", "hardware": "npu", "power_watts": 3, "max_concurrent": 1},
        {"id": "igpu0", "url": "http://127.0.0.1:2", "hardware": "igpu", "power_watts": 15, "max_concurrent": 1},
        {"id": "nvidia0", "url": "http://127.0.0.1:3", "hardware": "nvidia", "power_watts": 250, "max_concurrent": 2},
        {"id": "cpu0", "url": "http://127.0.0.1:4", "hardware": "cpu", "power_watts": 45, "max_concurrent": 2},
    ]}, "bench")
    registry = Registry(config)
    for state in registry.states.values():
        state.health = Health.HEALTHY
        state.inventory = Inventory(frozenset({MODEL, "qwen3:0.6b"}), {MODEL: LoadedModel(MODEL)})
    clock_value = [0.0]
    scheduler = Scheduler({b.id: b.max_concurrent for b in config.backends}, max_queue_depth=10 ** 9,
                          queue_timeout=600, clock=lambda: clock_value[0],
                          is_available=lambda b: True, is_loaded=registry.is_loaded)
    policy = EfficiencyPolicy(Mode.BALANCED, auto_inputs=default_auto_inputs(None))
    planner = Planner(registry, scheduler, Estimates(), policy)
    # Fill the queue with N waiters (all slots busy first so everything waits).
    for backend_id, capacity in scheduler.capacity.items():
        scheduler.used[backend_id] = capacity
        scheduler.in_flight[backend_id] = capacity
    hints = RoutingHints(request_id="bench", client_id="c0")
    base_ticket = planner.plan(MODEL, "ollama", hints, 256).ticket
    for i in range(depth):
        clock_value[0] += 0.001
        scheduler.queue.push(QueueEntry(Priority(i % 4), f"client{i % 50}", frozenset(scheduler.capacity),
                                        payload=(base_ticket, None), model=MODEL))
    return planner, scheduler, clock_value


def measure_decision(planner: Planner, scheduler: Scheduler, rounds: int) -> list[float]:
    """plan + place (the scheduler's select step; no slot is free, so it answers "wait")."""
    hints = RoutingHints(request_id="bench", client_id="bench-client", priority=Priority.HIGH)
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        plan = planner.plan(MODEL, "ollama", hints, 256)
        scheduler.place(plan.ticket)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def measure_enqueue_dequeue(scheduler: Scheduler, clock_value: list[float], rounds: int) -> list[float]:
    """Push one entry and hand one slot out of the queue (the grant path of `release`)."""
    queue = scheduler.queue
    ticket = Ticket((), Priority.NORMAL, "x", MODEL)
    samples = []
    for i in range(rounds):
        clock_value[0] += 0.001
        start = time.perf_counter_ns()
        queue.push(QueueEntry(Priority(i % 4), f"client{i % 50}", frozenset(scheduler.capacity),
                              payload=(ticket, None), model=MODEL))
        head = queue.best_for("nvidia0", lambda e: True, scheduler.reorder_window)
        queue.remove(head)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def summarise(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered), 2), "p95_us": round(ordered[int(len(ordered) * 0.95)], 2),
            "mean_us": round(statistics.fmean(ordered), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rounds", type=int, default=5000)
    args = parser.parse_args()
    # Interleave the depths in repeated short rounds so machine drift hits each depth alike.
    built = {depth: build(depth) for depth in DEPTHS}
    decisions: dict[int, list[float]] = {depth: [] for depth in DEPTHS}
    queue_ops: dict[int, list[float]] = {depth: [] for depth in DEPTHS}
    for planner, scheduler, _clock in built.values():
        measure_decision(planner, scheduler, 200)  # warm up
    per_round = max(1, args.rounds // 10)
    for _ in range(10):
        for depth, (planner, scheduler, clock_value) in built.items():
            decisions[depth] += measure_decision(planner, scheduler, per_round)
            queue_ops[depth] += measure_enqueue_dequeue(scheduler, clock_value, per_round)
    results = {depth: {"decision": summarise(decisions[depth]), "enqueue_dequeue": summarise(queue_ops[depth]),
                       "queued": len(built[depth][1].queue)} for depth in DEPTHS}
    at_1k = results[1_000]["decision"]["p50_us"]
    growth = results[10_000]["decision"]["p50_us"] / results[10]["decision"]["p50_us"]
    queue_growth = results[10_000]["enqueue_dequeue"]["p50_us"] / results[10]["enqueue_dequeue"]["p50_us"]
    log_ratio = math.log(10_000) / math.log(10)
    verdict = {
        "decision_p50_at_1000_us": at_1k,
        "decision_target_met": at_1k <= TARGET_DECISION_US,
        "decision_growth_10_to_10000": round(growth, 2),
        "queue_growth_10_to_10000": round(queue_growth, 2),
        "log_growth_bound": round(log_ratio, 2),
        "growth_target_met": growth <= log_ratio and queue_growth <= log_ratio,
    }
    report = {"results": {str(k): v for k, v in results.items()}, "verdict": verdict}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "scheduler_decision.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'queued':>8} {'decision p50':>13} {'p95':>8} {'enq+deq p50':>12} {'p95':>8}   (µs)")
    for depth, row in results.items():
        d, q = row["decision"], row["enqueue_dequeue"]
        print(f"{depth:>8} {d['p50_us']:>13} {d['p95_us']:>8} {q['p50_us']:>12} {q['p95_us']:>8}")
    print(f"decision at 1,000 queued: {at_1k} µs (target ≤ {TARGET_DECISION_US:g}) "
          f"{'PASS' if verdict['decision_target_met'] else 'FAIL'}")
    print(f"growth 10 → 10,000 queued: decision ×{growth:.2f}, enqueue/dequeue ×{queue_growth:.2f} "
          f"(O(log n) allows ×{log_ratio:.1f}; O(n) would be ×1000) {'PASS' if verdict['growth_target_met'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
