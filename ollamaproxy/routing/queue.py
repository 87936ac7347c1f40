"""The wait queue: four priority classes with aging and per-client fair shares, O(log n) (pure).

Order. Every entry gets one static key, lower first:

    key = virtual_arrival - priority * aging_seconds

- *Aging*: a request's priority effectively rises by one class every `aging_seconds` it waits,
  because comparing `p1 + waited1/A` with `p2 + waited2/A` at any instant is the same as
  comparing the static keys above (the current time cancels out). Bound: a request of class p
  that arrived at T is served before every request of class q that arrives after
  T + (q - p) * aging_seconds; a best-effort request is never overtaken by requests arriving
  more than 3 * aging_seconds after it (no starvation).
- *Fairness*: a client's virtual arrival is max(now, its previous virtual arrival + quantum).
  One client's flood of 100 requests gets virtual arrivals t, t+q, ..., t+99q, so another
  client's single request in the same class arriving at t is served after at most one of them.
- *FIFO*: equal keys fall back to the insertion sequence.

Each entry is indexed in one heap per backend it can use; removal is lazy (dead entries are
skipped when they reach the top), so push, pop and remove are O(log n) amortised.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


class Priority(enum.IntEnum):
    BEST_EFFORT = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


PRIORITY_NAMES = {"best-effort": Priority.BEST_EFFORT, "low": Priority.BEST_EFFORT, "normal": Priority.NORMAL,
                  "high": Priority.HIGH, "critical": Priority.CRITICAL}


def parse_priority(text: str) -> Priority:
    """`best-effort|low|normal|high|critical` (any case) or `0..3`; ValueError says what is allowed."""
    value = text.strip().lower()
    if value in PRIORITY_NAMES:
        return PRIORITY_NAMES[value]
    if value.isdigit() and int(value) <= 3:
        return Priority(int(value))
    raise ValueError(f"{text!r} is not a priority; allowed: best-effort, low, normal, high, critical, or 0-3")


@dataclass(eq=False)
class QueueEntry:
    """One waiting request. `payload` is the caller's (the scheduler keeps its future there)."""

    priority: Priority
    client_id: str
    backend_ids: frozenset[str]
    payload: Any = None
    arrival: float = 0.0
    key: float = 0.0
    seq: int = 0
    model: str = ""
    alive: bool = field(default=True)


class WaitQueue:
    def __init__(self, *, aging_seconds: float, fair_quantum_seconds: float,
                 clock: Callable[[], float]):
        self.aging_seconds = aging_seconds
        self.quantum = fair_quantum_seconds
        self.clock = clock
        self._heaps: dict[str, list[tuple[float, int, QueueEntry]]] = {}
        self._client_next: dict[str, float] = {}
        self._seq = itertools.count()
        self._live = 0
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return self._live

    def push(self, entry: QueueEntry) -> QueueEntry:
        now = self.clock()
        entry.arrival = now
        virtual = max(now, self._client_next.get(entry.client_id, now))
        self._client_next[entry.client_id] = virtual + self.quantum
        entry.key = virtual - int(entry.priority) * self.aging_seconds
        entry.seq = next(self._seq)
        item = (entry.key, entry.seq, entry)
        for backend_id in entry.backend_ids:
            heap = self._heaps.setdefault(backend_id, [])
            heapq.heappush(heap, item)
            self._counts[backend_id] = self._counts.get(backend_id, 0) + 1
            if len(heap) > 2 * self._counts[backend_id] + 64:
                heap[:] = [it for it in heap if it[2].alive]  # drop entries removed via other heaps
                heapq.heapify(heap)
        self._live += 1
        if len(self._client_next) > 4 * self._live + 64:
            self._forget_idle_clients(now)
        return entry

    def _forget_idle_clients(self, now: float) -> None:
        # A client whose next virtual arrival is in the past gets `now` anyway: forget it.
        for client_id in [c for c, t in self._client_next.items() if t <= now]:
            del self._client_next[client_id]

    def remove(self, entry: QueueEntry) -> None:
        """Take an entry out (granted, cancelled or timed out); its heap slots are skipped later."""
        if entry.alive:
            entry.alive = False
            self._live -= 1
            for backend_id in entry.backend_ids:
                self._counts[backend_id] -= 1

    def _clean_top(self, backend_id: str) -> list[tuple[float, int, QueueEntry]] | None:
        heap = self._heaps.get(backend_id)
        if not heap:
            return None
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
        return heap or None

    def head(self, backend_id: str) -> QueueEntry | None:
        """The entry that should get the next slot on `backend_id`, without removing it."""
        heap = self._clean_top(backend_id)
        return heap[0][2] if heap else None

    def best_for(self, backend_id: str, prefer: Callable[[QueueEntry], bool], window: int) -> QueueEntry | None:
        """Among the first `window` entries for `backend_id`, the first one `prefer` likes, if its key is
        within one aging step of the head's; else the head. Groups same-model requests without
        letting the reordering outrun aging."""
        heap = self._clean_top(backend_id)
        if not heap:
            return None
        head = heap[0][2]
        if window <= 1 or prefer(head):
            return head
        popped = []
        chosen = head
        try:
            while heap and len(popped) < window:
                item = heapq.heappop(heap)
                if not item[2].alive:
                    continue
                popped.append(item)
                if item[2] is not head and prefer(item[2]) and item[0] - head.key <= self.aging_seconds:
                    chosen = item[2]
                    break
        finally:
            for item in popped:
                heapq.heappush(heap, item)
        return chosen

    def entries(self) -> Iterable[QueueEntry]:
        """Live entries in no particular order (for views and metrics)."""
        seen: set[int] = set()
        for heap in self._heaps.values():
            for _key, seq, entry in heap:
                if entry.alive and seq not in seen:
                    seen.add(seq)
                    yield entry

    def count_for(self, backend_id: str) -> int:
        """Live entries that could use `backend_id` (O(1))."""
        return self._counts.get(backend_id, 0)
