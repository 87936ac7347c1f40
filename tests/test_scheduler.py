"""Scheduler: select-and-reserve, queue order, slot costs, residency waits, no leaked slots (driven directly)."""

import asyncio

import pytest

from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.routing.candidates import Candidate
from ollamaproxy.routing.queue import Priority
from ollamaproxy.routing.scheduler import Scheduler, Ticket

A = Candidate("a", loaded=False, order=0)
B = Candidate("b", loaded=False, order=1)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make(capacities=None, **kw):
    kw.setdefault("max_queue_depth", 100)
    kw.setdefault("queue_timeout", 30.0)
    return Scheduler(capacities or {"a": 1, "b": 1}, **kw)


def ticket(*ranked, priority=Priority.NORMAL, client="c", model="m"):
    return Ticket(tuple(ranked), priority, client, model)


async def settle():
    for _ in range(3):
        await asyncio.sleep(0)


def test_best_ranked_free_candidate_is_reserved_at_once():
    sched = make({"a": 2, "b": 2})
    grant, _ = sched.try_acquire(ticket(B, A))
    assert grant.backend_id == "b" and sched.in_flight == {"a": 0, "b": 1}
    grant, _ = sched.try_acquire(ticket(A, B))
    assert grant.backend_id == "a"


def test_next_free_when_best_is_full():
    sched = make()
    sched.try_acquire(ticket(A))
    grant, _ = sched.try_acquire(ticket(A, B))
    assert grant.backend_id == "b" and grant.reason == "next-free"


def test_waits_for_a_loaded_backend_rather_than_loading_elsewhere():
    sched = make()
    loaded_a = Candidate("a", loaded=True, order=0)
    sched.try_acquire(ticket(loaded_a))
    grant, placement = sched.try_acquire(ticket(loaded_a, B))
    assert grant is None and placement.reason == "wait-for-loaded" and placement.waits_for == ("a",)
    assert sched.in_flight["b"] == 0


def test_release_without_reservation_is_an_error():
    with pytest.raises(RuntimeError):
        make().release("a")


def test_slot_cost_lets_small_models_share_where_a_large_one_runs_alone():
    sched = make({"gpu": 3})
    small = Candidate("gpu", loaded=True, order=0, cost=1)
    large = Candidate("gpu", loaded=True, order=0, cost=3)
    grants = [sched.try_acquire(ticket(small))[0] for _ in range(3)]
    assert all(g is not None for g in grants) and sched.in_flight["gpu"] == 3
    assert sched.try_acquire(ticket(small))[0] is None
    for _ in range(3):
        sched.release("gpu", 1)
    assert sched.try_acquire(ticket(large))[0] is not None
    assert sched.try_acquire(ticket(small))[0] is None  # the large one runs alone


async def test_large_waiter_is_not_starved_by_small_newcomers():
    sched = make({"gpu": 3})
    small = Candidate("gpu", loaded=True, order=0, cost=1)
    large = Candidate("gpu", loaded=True, order=0, cost=3)
    sched.try_acquire(ticket(small))
    big = asyncio.create_task(sched.acquire(ticket(large, model="big")))
    await settle()
    assert sched.queue_depth == 1
    grant, placement = sched.try_acquire(ticket(small))
    assert grant is None  # does not take the free units the large request waits for
    sched.release("gpu", 1)
    assert (await big).backend_id == "gpu" and sched.used["gpu"] == 3


async def test_critical_overtakes_queued_best_effort():
    clock = Clock()
    sched = make({"a": 1}, clock=clock)
    sched.try_acquire(ticket(A))
    order = []

    async def wait(tag, priority):
        grant = await sched.acquire(ticket(A, priority=priority, client=tag))
        order.append(tag)
        sched.release(grant.backend_id, grant.candidate.cost)

    tasks = []
    for tag, prio in [("be1", Priority.BEST_EFFORT), ("be2", Priority.BEST_EFFORT), ("crit", Priority.CRITICAL)]:
        tasks.append(asyncio.create_task(wait(tag, prio)))
        await settle()
        clock.now += 0.1
    sched.release("a")
    await asyncio.gather(*tasks)
    assert order == ["crit", "be1", "be2"]


async def test_flood_from_one_client_does_not_starve_another():
    sched = make({"a": 1}, max_queue_depth=500)
    sched.try_acquire(ticket(A))
    order = []

    async def wait(tag, client):
        grant = await sched.acquire(ticket(A, client=client))
        order.append(tag)
        sched.release(grant.backend_id)

    tasks = [asyncio.create_task(wait(f"flood{i}", "flooder")) for i in range(100)]
    await settle()
    tasks.append(asyncio.create_task(wait("single", "other")))
    await settle()
    sched.release("a")
    await asyncio.gather(*tasks)
    assert order.index("single") <= 1


async def test_queue_full_is_503_with_retry_after():
    sched = make(max_queue_depth=1)
    sched.try_acquire(ticket(A))
    waiting = asyncio.create_task(sched.acquire(ticket(A)))
    await settle()
    with pytest.raises(ApiError) as caught:
        await sched.acquire(ticket(A))
    assert caught.value.status == 503 and caught.value.code == "queue_full" and "Retry-After" in caught.value.headers
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert sched.queue_depth == 0


async def test_queue_timeout_is_503_and_leaves_no_entry():
    sched = make(queue_timeout=0.01)
    sched.try_acquire(ticket(A))
    with pytest.raises(ApiError) as caught:
        await sched.acquire(ticket(A))
    assert caught.value.code == "queue_timeout"
    assert sched.queue_depth == 0 and sched.in_flight["a"] == 1


async def test_cancel_after_grant_gives_the_slot_back():
    sched = make()
    sched.try_acquire(ticket(A))
    waiter = asyncio.create_task(sched.acquire(ticket(A)))
    await settle()
    sched.release("a")        # grants the slot to the waiter...
    waiter.cancel()           # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sched.in_flight["a"] == 0 and sched.used["a"] == 0 and sched.queue_depth == 0


async def test_wake_on_recovery_grants_waiters():
    available = {"a": False}
    sched = make(is_available=lambda b: available.get(b, True))
    waiter = asyncio.create_task(sched.acquire(ticket(A)))
    await settle()
    assert sched.queue_depth == 1
    available["a"] = True
    sched.wake("a")
    assert (await waiter).backend_id == "a"


async def test_same_model_grouped_on_a_freed_backend():
    clock = Clock()
    loaded = {("a", "big")}
    sched = make({"a": 1}, is_loaded=lambda b, m: (b, m) in loaded, clock=clock)
    sched.try_acquire(ticket(A, model="big"))
    order = []

    async def wait(tag, model):
        grant = await sched.acquire(ticket(A, model=model, client=tag))
        order.append(tag)
        sched.release(grant.backend_id)

    tasks = []
    for tag, model in [("other", "small"), ("same", "big")]:
        tasks.append(asyncio.create_task(wait(tag, model)))
        await settle()
        clock.now += 0.5
    sched.release("a")
    await asyncio.gather(*tasks)
    assert order == ["same", "other"]  # no swap away from the loaded model within the window


def test_place_has_no_side_effects():
    sched = make()
    before = (dict(sched.used), dict(sched.in_flight), sched.queue_depth, sched.total_granted)
    placement = sched.place(ticket(A, B))
    assert placement.candidate.backend_id == "a"
    assert (dict(sched.used), dict(sched.in_flight), sched.queue_depth, sched.total_granted) == before
