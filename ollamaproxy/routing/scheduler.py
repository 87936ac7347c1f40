"""Scheduler: owns per-backend slots and the priority wait queue; selects and reserves in one step.

Invariants (the event loop is the single owner; no `await` between a decision and its effect):
- `used[b]` (slot units) never exceeds `capacity[b]`; it rises only in `_reserve` and falls only
  in `release`. A request occupies `Candidate.cost` units (per-model slot cost).
- Every `acquire` ends in exactly one outcome: a reserved slot (the caller must `release` it),
  an ApiError (queue full, timed out), or cancellation. A waiter cancelled after a slot was
  granted to it gives that slot back, so cancellation never leaks.
- Waiters are served in WaitQueue order (priority with aging, per-client fairness, FIFO). A
  freed slot goes to the best waiter that can use that backend; when the best one does not fit
  yet, smaller requests do not jump it (no starvation of large models).
- A newcomer never takes a backend someone is already waiting for.
- Residency: a request whose best-ranked backend is full but has the model loaded waits for it
  rather than taking a free backend that would have to load the model (the ranking already
  weighed the expected wait against a load); same-model waiters are grouped on a freed
  backend within `reorder_window`, never further than one aging step.
- Event driven: `release` and `wake` hand slots to waiters; nothing polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.candidates import Candidate
from ollamaproxy.routing.queue import Priority, QueueEntry, WaitQueue


@dataclass(frozen=True)
class Ticket:
    """What one request asks of the scheduler: its ranked candidates (best first) and its place."""

    ranked: tuple[Candidate, ...]
    priority: Priority = Priority.NORMAL
    client_id: str = ""
    model: str = ""


@dataclass(frozen=True)
class Grant:
    """A reserved slot: the backend chosen, why, and how long the request waited for it."""

    candidate: Candidate
    reason: str
    queued_seconds: float

    @property
    def backend_id(self) -> str:
        return self.candidate.backend_id


@dataclass(frozen=True)
class Placement:
    """A side-effect-free answer to "what would happen to this ticket now?"."""

    candidate: Candidate | None      # the backend it would start on now, None when it would wait
    reason: str
    waits_for: tuple[str, ...]       # backends it would wait for


class Scheduler:
    def __init__(self, capacities: dict[str, int], *, max_queue_depth: int, queue_timeout: float,
                 aging_seconds: float = 30.0, fair_quantum_seconds: float = 1.0, reorder_window: int = 8,
                 is_available: Callable[[str], bool] = lambda _backend_id: True,
                 is_loaded: Callable[[str, str], bool] = lambda _backend_id, _model: False,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity = dict(capacities)
        self.used = {backend_id: 0 for backend_id in capacities}
        self.in_flight = {backend_id: 0 for backend_id in capacities}
        self.max_queue_depth = max_queue_depth
        self.queue_timeout = queue_timeout
        self.reorder_window = reorder_window
        self.is_available = is_available
        self.is_loaded = is_loaded
        self.clock = clock
        self.queue = WaitQueue(aging_seconds=aging_seconds, fair_quantum_seconds=fair_quantum_seconds, clock=clock)
        self.total_granted = 0
        self.on_change: Callable[[str], None] | None = None  # told the backend whose counts changed ("" = queue)

    # ---- read-only views -------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self.queue)

    def queued_for(self, backend_id: str) -> int:
        return self.queue.count_for(backend_id)

    def free_units(self, backend_id: str) -> int:
        return self.capacity[backend_id] - self.used[backend_id]

    def _fits(self, candidate: Candidate) -> bool:
        backend_id = candidate.backend_id
        return self.used[backend_id] + candidate.cost <= self.capacity[backend_id] and self.is_available(backend_id)

    # ---- decisions -------------------------------------------------------------------

    def place(self, ticket: Ticket) -> Placement:
        """Where the ticket would start now, or which backends it would wait for (no side effects)."""
        ranked = ticket.ranked
        better_full_loaded = False
        for index, candidate in enumerate(ranked):
            backend_id = candidate.backend_id
            free = self._fits(candidate) and self.queue.count_for(backend_id) == 0
            if free:
                if better_full_loaded and not candidate.loaded:
                    # A better-ranked backend has the model loaded: waiting for it beats a load here.
                    waits = tuple(c.backend_id for c in ranked[:index])
                    return Placement(None, "wait-for-loaded", waits)
                if index == 0:
                    reason = candidate.reason or ("only-candidate" if len(ranked) == 1 else "best-ranked")
                else:
                    reason = "next-free"
                return Placement(candidate, reason, ())
            if candidate.loaded:
                better_full_loaded = True
        return Placement(None, "all-busy", tuple(c.backend_id for c in ranked))

    def _reserve(self, candidate: Candidate) -> None:
        self.used[candidate.backend_id] += candidate.cost
        self.in_flight[candidate.backend_id] += 1
        self.total_granted += 1
        if self.on_change is not None:
            self.on_change(candidate.backend_id)

    def try_acquire(self, ticket: Ticket) -> tuple[Grant | None, Placement]:
        placement = self.place(ticket)
        if placement.candidate is None:
            return None, placement
        self._reserve(placement.candidate)
        return Grant(placement.candidate, placement.reason, 0.0), placement

    async def acquire(self, ticket: Ticket) -> Grant:
        """Reserve a slot on one of the ranked candidates, waiting in queue order when none is free."""
        grant, placement = self.try_acquire(ticket)
        if grant is not None:
            return grant
        if len(self.queue) >= self.max_queue_depth:
            raise ApiError(503, "queue_full",
                           f"all slots are busy and the queue is full ({self.max_queue_depth} waiting); retry later",
                           headers={"Retry-After": "2"})
        future = asyncio.get_running_loop().create_future()
        entry = self.queue.push(QueueEntry(ticket.priority, ticket.client_id, frozenset(placement.waits_for),
                                           payload=(ticket, future), model=ticket.model))
        if self.on_change is not None:
            self.on_change("")
        granted: tuple[Candidate, str] | None = None
        try:
            async with asyncio.timeout(self.queue_timeout):
                granted = await future
        except TimeoutError:
            raise ApiError(503, "queue_timeout",
                           f"waited {self.queue_timeout:g}s in the queue without a free slot on "
                           f"{', '.join(sorted(placement.waits_for))}; retry later",
                           headers={"Retry-After": "5"}) from None
        finally:
            if granted is None:
                if entry.alive:
                    self.queue.remove(entry)
                    if self.on_change is not None:
                        self.on_change("")
                elif future.done() and not future.cancelled():
                    # Granted, but the caller went away before it could use the slot: give it back.
                    candidate = future.result()[0]
                    self.release(candidate.backend_id, candidate.cost)
        candidate, reason = granted
        return Grant(candidate, f"queued-{reason}", self.clock() - entry.arrival)

    def release(self, backend_id: str, cost: int = 1) -> None:
        """Give back one request's slots on `backend_id` and hand them to the best waiter that fits."""
        if self.in_flight[backend_id] <= 0 or self.used[backend_id] < cost:
            raise RuntimeError(f"release of backend {backend_id!r} without a reserved slot")
        self.used[backend_id] -= cost
        self.in_flight[backend_id] -= 1
        if self.on_change is not None:
            self.on_change(backend_id)
        self.wake(backend_id)

    def wake(self, backend_id: str) -> None:
        """Hand free slots on `backend_id` to waiters in queue order (after a release or a recovery)."""
        while self.free_units(backend_id) > 0 and self.is_available(backend_id):
            entry = self.queue.best_for(backend_id, lambda e: self.is_loaded(backend_id, e.model),
                                        self.reorder_window)
            if entry is None:
                return
            ticket, future = entry.payload
            candidate = next(c for c in ticket.ranked if c.backend_id == backend_id)
            if not self._fits(candidate):
                return  # the best waiter needs more room: later, smaller ones do not jump it
            self.queue.remove(entry)
            if future.done():  # cancelled between its timeout firing and its cleanup
                continue
            self._reserve(candidate)
            reason = "loaded-slot-freed" if self.is_loaded(backend_id, entry.model) else "slot-freed"
            future.set_result((candidate, reason))

    def wake_all(self) -> None:
        for backend_id in self.capacity:
            self.wake(backend_id)
