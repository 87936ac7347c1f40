"""Scheduler: select-and-reserve, arrival order, queue bound and timeout, no leaked slots."""

import asyncio

import pytest

from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.candidates import Candidate
from ollamaproxy.routing.scheduler import Scheduler

A = Candidate("a", loaded=False, order=0)
B = Candidate("b", loaded=False, order=1)
B_LOADED = Candidate("b", loaded=True, order=1)


def make(capacities=None, **kw):
    kw.setdefault("max_queue_depth", 10)
    kw.setdefault("queue_timeout", 30.0)
    return Scheduler(capacities or {"a": 1, "b": 1}, **kw)


def test_prefers_loaded_then_least_busy():
    sched = make({"a": 2, "b": 2})
    assert sched.try_acquire((A, B_LOADED)).backend_id == "b"
    grant = sched.try_acquire((A, B))
    assert grant.backend_id == "a" and grant.reason == "least-busy"
    assert sched.in_flight == {"a": 1, "b": 1}


def test_full_returns_none_and_release_frees():
    sched = make()
    assert sched.try_acquire((A,)).backend_id == "a"
    assert sched.try_acquire((A,)) is None
    sched.release("a")
    assert sched.try_acquire((A,)) is not None


def test_release_without_reservation_is_an_error():
    with pytest.raises(RuntimeError):
        make().release("a")


async def test_waiters_served_in_arrival_order():
    sched = make()
    first = await sched.acquire((A,))
    order = []

    async def wait(tag):
        grant = await sched.acquire((A,))
        order.append(tag)
        return grant

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    while sched.queue_depth < 3:
        await asyncio.sleep(0)
    for _ in range(3):
        sched.release(first.backend_id)
        await asyncio.sleep(0)
        first = first  # the released slot went to the next waiter
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert sched.in_flight["a"] == 1 and sched.queue_depth == 0


async def test_newcomer_does_not_jump_the_queue_on_a_backend_someone_waits_for():
    sched = make({"a": 1, "b": 1})
    await sched.acquire((A,))
    waiter = asyncio.create_task(sched.acquire((A,)))
    await asyncio.sleep(0)
    assert sched.queue_depth == 1
    sched.in_flight["a"] = 0  # simulate a slot freed without wake (e.g. capacity race)
    assert sched.try_acquire((A, B)).backend_id == "b"  # newcomer takes b, not a
    sched.in_flight["a"] = 1
    sched.release("a")
    grant = await waiter
    assert grant.backend_id == "a" and grant.reason.startswith("queued-")


async def test_queue_full_is_503_with_retry_after():
    sched = make(max_queue_depth=1)
    await sched.acquire((A,))
    waiting = asyncio.create_task(sched.acquire((A,)))
    await asyncio.sleep(0)
    with pytest.raises(ApiError) as caught:
        await sched.acquire((A,))
    assert caught.value.status == 503 and caught.value.code == "queue_full"
    assert "Retry-After" in caught.value.headers
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sched.queue_depth == 0


async def test_queue_timeout_is_503_and_leaves_no_entry():
    sched = make(queue_timeout=0.01)
    await sched.acquire((A,))
    with pytest.raises(ApiError) as caught:
        await sched.acquire((A,))
    assert caught.value.code == "queue_timeout"
    assert sched.queue_depth == 0 and sched.in_flight["a"] == 1


async def test_cancel_after_grant_gives_the_slot_back():
    sched = make()
    first = await sched.acquire((A,))
    waiter = asyncio.create_task(sched.acquire((A,)))
    await asyncio.sleep(0)
    sched.release(first.backend_id)      # grants the slot to the waiter...
    waiter.cancel()                      # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sched.in_flight["a"] == 0 and sched.queue_depth == 0


async def test_wake_on_recovery_grants_waiters():
    available = {"a": False}
    sched = make(is_available=lambda b: available.get(b, True))
    waiter = asyncio.create_task(sched.acquire((A,)))
    await asyncio.sleep(0)
    assert sched.queue_depth == 1
    available["a"] = True
    sched.wake("a")
    assert (await waiter).backend_id == "a"
