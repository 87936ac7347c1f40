"""Scheduler: owns per-backend slots and the wait queue; selects and reserves a slot in one step.

Invariants (the event loop is the single owner; no `await` between a decision and its effect):
- `in_flight[b]` never exceeds `capacity[b]`; it rises only in `_reserve` and falls only in `release`.
- Every `acquire` ends in exactly one outcome: a reserved slot (the caller must `release` it),
  an ApiError (queue full, timed out, nothing can serve), or cancellation. A waiter that is
  cancelled after a slot was granted to it gives that slot back, so cancellation never leaks.
- Waiters are served in arrival order: a freed slot goes to the earliest waiter that can use it.
- The queue is event driven: `release` and `wake` hand slots to waiters; nothing polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.candidates import Candidate


@dataclass(eq=False)
class _Waiter:
    candidates: tuple[Candidate, ...]
    future: asyncio.Future
    enqueued_at: float
    ids: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = frozenset(c.backend_id for c in self.candidates)


@dataclass(frozen=True)
class Grant:
    """A reserved slot: the backend chosen, why, and how long the request waited for it."""

    candidate: Candidate
    reason: str
    queued_seconds: float

    @property
    def backend_id(self) -> str:
        return self.candidate.backend_id


class Scheduler:
    def __init__(self, capacities: dict[str, int], *, max_queue_depth: int, queue_timeout: float,
                 is_available: Callable[[str], bool] = lambda _backend_id: True,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity = dict(capacities)
        self.in_flight = {backend_id: 0 for backend_id in capacities}
        self.max_queue_depth = max_queue_depth
        self.queue_timeout = queue_timeout
        self.is_available = is_available
        self.clock = clock
        self._waiting: list[_Waiter] = []
        self.total_granted = 0

    # ---- read-only views -------------------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def queued_for(self, backend_id: str) -> int:
        return sum(1 for waiter in self._waiting if backend_id in waiter.ids)

    def free_slots(self, backend_id: str) -> int:
        return self.capacity[backend_id] - self.in_flight[backend_id]

    # ---- decisions -------------------------------------------------------------------

    def _pick(self, candidates: tuple[Candidate, ...]) -> tuple[Candidate, str] | None:
        """Best candidate with a free slot now: model loaded first, then the least busy, then config order."""
        best: Candidate | None = None
        best_key: tuple | None = None
        for candidate in candidates:
            backend_id = candidate.backend_id
            capacity = self.capacity[backend_id]
            used = self.in_flight[backend_id]
            if used >= capacity or not self.is_available(backend_id):
                continue
            key = (not candidate.loaded, used / capacity, candidate.order)
            if best_key is None or key < best_key:
                best, best_key = candidate, key
        if best is None:
            return None
        if len(candidates) == 1:
            reason = "only-candidate"
        elif best.loaded:
            reason = "loaded-slot-free"
        else:
            reason = "least-busy"
        return best, reason

    def _reserve(self, candidate: Candidate) -> None:
        self.in_flight[candidate.backend_id] += 1
        self.total_granted += 1

    def try_acquire(self, candidates: tuple[Candidate, ...]) -> Grant | None:
        """Select and reserve a free slot in one step, or None when every candidate is full.

        Never jumps the queue: a backend that someone is already waiting for is not handed
        to a newcomer.
        """
        if self._waiting:
            candidates = tuple(c for c in candidates if not self.queued_for(c.backend_id))
        picked = self._pick(candidates)
        if picked is None:
            return None
        candidate, reason = picked
        self._reserve(candidate)
        return Grant(candidate, reason, 0.0)

    async def acquire(self, candidates: tuple[Candidate, ...]) -> Grant:
        """Reserve a slot on one of the candidates, waiting in arrival order when all are full."""
        grant = self.try_acquire(candidates)
        if grant is not None:
            return grant
        if len(self._waiting) >= self.max_queue_depth:
            raise ApiError(503, "queue_full",
                           f"all slots are busy and the queue is full ({self.max_queue_depth} waiting); retry later",
                           headers={"Retry-After": "2"})
        loop = asyncio.get_running_loop()
        waiter = _Waiter(candidates, loop.create_future(), self.clock())
        self._waiting.append(waiter)
        granted: tuple[Candidate, str] | None = None
        try:
            async with asyncio.timeout(self.queue_timeout):
                granted = await waiter.future
        except TimeoutError:
            raise ApiError(503, "queue_timeout",
                           f"waited {self.queue_timeout:g}s in the queue without a free slot on "
                           f"{', '.join(sorted(waiter.ids))}; retry later",
                           headers={"Retry-After": "5"}) from None
        finally:
            if granted is None:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.future.done() and not waiter.future.cancelled():
                    # Granted, but the caller went away before it could use the slot: give it back.
                    self.release(waiter.future.result()[0].backend_id)
        candidate, reason = granted
        return Grant(candidate, "queued-" + reason, self.clock() - waiter.enqueued_at)

    def release(self, backend_id: str) -> None:
        """Give back one slot on `backend_id` and hand it to the earliest waiter that can use it."""
        if self.in_flight[backend_id] <= 0:
            raise RuntimeError(f"release of backend {backend_id!r} without a reserved slot")
        self.in_flight[backend_id] -= 1
        self.wake(backend_id)

    def wake(self, backend_id: str) -> None:
        """Hand free slots on `backend_id` to waiters, in arrival order (after a release or recovery)."""
        index = 0
        while index < len(self._waiting) and self.free_slots(backend_id) > 0 and self.is_available(backend_id):
            waiter = self._waiting[index]
            if backend_id not in waiter.ids or waiter.future.done():
                index += 1
                continue
            picked = self._pick(tuple(c for c in waiter.candidates if c.backend_id == backend_id))
            if picked is None:
                index += 1
                continue
            candidate, _reason = picked
            del self._waiting[index]
            self._reserve(candidate)
            reason = "loaded-slot-free" if candidate.loaded else "slot-freed"
            waiter.future.set_result((candidate, reason))

    def wake_all(self) -> None:
        for backend_id in self.capacity:
            self.wake(backend_id)

