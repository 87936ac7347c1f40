"""Wait queue order: classes, FIFO within a class, aging bound, per-client fairness (pure, injected clock)."""

import pytest

from ollamaproxy.routing.queue import Priority, QueueEntry, WaitQueue, parse_priority


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(aging=30.0, quantum=1.0):
    clock = Clock()
    return WaitQueue(aging_seconds=aging, fair_quantum_seconds=quantum, clock=clock), clock


def push(queue, tag, priority=Priority.NORMAL, client="c", backends=("a",), model=""):
    return queue.push(QueueEntry(priority, client, frozenset(backends), payload=tag, model=model))


def drain(queue, backend="a"):
    order = []
    while (entry := queue.head(backend)) is not None:
        order.append(entry.payload)
        queue.remove(entry)
    return order


def test_parse_priority_names_and_numbers():
    assert parse_priority("Critical") is Priority.CRITICAL
    assert parse_priority("low") is parse_priority("best-effort") is Priority.BEST_EFFORT
    assert parse_priority(" 2 ") is Priority.HIGH
    for bad in ("4", "urgent", "", "-1"):
        with pytest.raises(ValueError, match="allowed: best-effort, low, normal, high, critical, or 0-3"):
            parse_priority(bad)


def test_higher_class_first_fifo_within_class():
    queue, clock = make()
    for i, prio in enumerate([Priority.NORMAL, Priority.BEST_EFFORT, Priority.CRITICAL, Priority.NORMAL,
                              Priority.HIGH]):
        push(queue, f"{prio.name}-{i}", prio, client=f"client{i}")
        clock.now += 0.001
    assert drain(queue) == ["CRITICAL-2", "HIGH-4", "NORMAL-0", "NORMAL-3", "BEST_EFFORT-1"]


def test_aging_bound_best_effort_is_not_starved():
    queue, clock = make(aging=30.0)
    push(queue, "old-best-effort", Priority.BEST_EFFORT, client="x")
    clock.now += 89.0  # less than 3 * aging: a new critical request still goes first
    push(queue, "critical-early", Priority.CRITICAL, client="y")
    clock.now += 2.0   # now more than 3 * aging after the best-effort request arrived
    push(queue, "critical-late", Priority.CRITICAL, client="z")
    assert drain(queue) == ["critical-early", "old-best-effort", "critical-late"]


def test_flood_from_one_client_does_not_starve_another():
    queue, clock = make(quantum=1.0)
    for i in range(100):
        push(queue, f"flood-{i}", client="flooder")
    clock.now += 0.5
    push(queue, "single", client="other")
    order = drain(queue)
    assert order.index("single") <= 1


def test_reorder_window_groups_same_model_but_aging_caps_it():
    queue, clock = make(aging=10.0, quantum=0.0)
    push(queue, "m1", model="m1", client="a")
    clock.now += 1
    push(queue, "m2", model="m2", client="b")
    clock.now += 1
    push(queue, "m2-late", model="m2", client="c")
    pick = queue.best_for("a", lambda e: e.model == "m2", window=8)
    assert pick.payload == "m2"  # within the window and one aging step of the head
    clock.now += 20
    push(queue, "m3-too-late", model="m3", client="d")
    pick = queue.best_for("a", lambda e: e.model == "m3", window=8)
    assert pick.payload == "m1"  # 22 s behind the head: reordering may not outrun aging


def test_entries_only_for_their_backends_and_lazy_removal():
    queue, clock = make()
    both = push(queue, "both", backends=("a", "b"))
    only_b = push(queue, "only-b", backends=("b",))
    assert queue.count_for("a") == 1 and queue.count_for("b") == 2 and len(queue) == 2
    queue.remove(both)  # granted via a
    assert queue.head("b") is only_b and queue.head("a") is None
    assert len(queue) == 1 and queue.count_for("b") == 1


def test_heaps_compact_when_entries_leave_through_other_backends():
    queue, clock = make()
    for i in range(500):
        entry = push(queue, i, backends=("a", "b"))
        queue.remove(entry)  # always taken via "a": "b"'s heap would otherwise grow forever
    assert len(queue._heaps["b"]) < 100
