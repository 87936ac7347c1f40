"""Breakers wired into scheduling: power spikes hold new work, hot devices stop taking it, stale data is unsafe."""

import asyncio
import json

import pytest

from conftest import backend_entry, wait_until
from ollamaproxy.hardware.discovery import DiscoveredDevice
from ollamaproxy.hardware.readings import DeviceReading
from ollamaproxy.hardware.source import ProbeResult

MODEL = "llama3.2:1b"


class FakeGpuSource:
    """A telemetry source whose readings the test sets (replaces NVML for routing tests)."""

    name = "fake-nvml"

    def __init__(self, gpus=2):
        self.readings = {i: {"power_w": 50.0, "temperature_c": 50.0} for i in range(gpus)}
        self.fail: str | None = None

    def probe(self):
        return ProbeResult.OK

    def read(self, now):
        if self.fail:
            raise RuntimeError(self.fail)
        return [DeviceReading(device_id=f"nvidia:{i}", kind="nvidia", source=self.name, taken_at=now,
                              bus_id=f"0000:0{i + 1}:00.0", **values)
                for i, values in self.readings.items()]


@pytest.fixture
async def two_gpus(sims, routers):
    source = FakeGpuSource()
    gpu0 = await sims("gpu0", [MODEL], loaded=[MODEL])
    gpu1 = await sims("gpu1", [MODEL], loaded=[MODEL])
    router = await routers(
        [backend_entry(gpu0, hardware="nvidia", gpu_index=0, power_watts=200, max_concurrent=4),
         backend_entry(gpu1, hardware="nvidia", gpu_index=1, power_watts=200, max_concurrent=4)],
        telemetry_sources=[source],
        power={"budget_watts": 350, "resume_ratio": 0.9},
        thermal={"pause_celsius": 82, "resume_celsius": 75},
        telemetry={"interval_seconds": 3600, "stale_seconds": 30},  # tests drive sampling by hand
        queue={"max_depth": 50},
    )
    return router, source, {"gpu0": gpu0, "gpu1": gpu1}


async def sample(router):
    await router.router.sampler.sample_once()


async def generate(http, router, headers=None):
    body = json.dumps({"model": MODEL, "prompt": "hi", "stream": False})
    async with http.post(router.url + "/api/generate", data=body, headers=headers or {}) as resp:
        await resp.read()
        return resp.status, resp.headers


async def test_power_spike_holds_new_work_then_releases_it_in_priority_order(two_gpus, http):
    router, source, sims = two_gpus
    source.readings[0]["power_w"] = source.readings[1]["power_w"] = 190.0  # 380 W ≥ 350 W budget
    await sample(router)
    assert router.router.safety.board.degraded_codes() == ["power-budget"]
    finished = []

    async def send(tag, priority):
        await generate(http, router, {"X-Priority": priority, "X-Client-ID": tag})
        finished.append(tag)

    tasks = []
    for i, (tag, prio) in enumerate([("low", "low"), ("normal", "normal"), ("critical", "critical")]):
        tasks.append(asyncio.create_task(send(tag, prio)))
        await wait_until(lambda: router.scheduler.queue_depth == i + 1)
    assert sims["gpu0"].stats.requests + sims["gpu1"].stats.requests == 0  # held, not sent
    source.readings[0]["power_w"] = source.readings[1]["power_w"] = 170.0  # 340 W: still above 315 W
    await sample(router)
    assert router.scheduler.queue_depth == 3  # hysteresis: not yet
    source.readings[0]["power_w"] = source.readings[1]["power_w"] = 150.0  # 300 W < 0.9 × 350
    await sample(router)
    await asyncio.gather(*tasks)
    assert finished == ["critical", "normal", "low"]


async def test_in_flight_work_continues_when_the_budget_breaker_opens(two_gpus, http):
    router, source, sims = two_gpus
    sims["gpu0"].behaviour.hold = asyncio.Event()
    sims["gpu1"].behaviour.hold = sims["gpu0"].behaviour.hold
    running = asyncio.create_task(generate(http, router))
    await wait_until(lambda: sims["gpu0"].stats.active + sims["gpu1"].stats.active == 1)
    source.readings[0]["power_w"] = 400.0
    await sample(router)
    sims["gpu0"].behaviour.hold.set()
    status, _ = await running
    assert status == 200


async def test_hot_device_stops_new_work_while_the_other_keeps_serving(two_gpus, http):
    router, source, sims = two_gpus
    source.readings[0]["temperature_c"] = 90.0
    await sample(router)
    for _ in range(4):
        status, headers = await generate(http, router)
        assert status == 200 and headers["X-Backend-Used"] == "gpu1"
    assert sims["gpu0"].stats.requests == 0
    answer = router.router.explain({"model": MODEL})
    assert answer["excluded"]["gpu0"].startswith("thermal:")
    source.readings[0]["temperature_c"] = 80.0  # below pause, above resume: still held
    await sample(router)
    assert router.router.safety.blocked("gpu0") is not None
    source.readings[0]["temperature_c"] = 70.0
    await sample(router)
    assert router.router.safety.blocked("gpu0") is None


async def test_stale_telemetry_opens_the_breaker(two_gpus, http):
    router, source, sims = two_gpus
    safety = router.router.safety
    source.fail = "NVML_ERROR_GPU_IS_LOST"
    await sample(router)
    assert safety.blocked("gpu0") is None  # the last good reading is still fresh
    router.registry.clock = safety.clock = lambda: 10_000.0  # time passes with no good readings
    safety.tick()
    assert safety.blocked("gpu0")[0].value == "telemetry-stale"
    assert safety.board.degraded_codes() == ["telemetry-stale"]
    waiting = asyncio.create_task(generate(http, router))  # every GPU is held: the request queues
    await wait_until(lambda: router.scheduler.queue_depth == 1)
    assert sims["gpu0"].stats.requests + sims["gpu1"].stats.requests == 0
    source.fail = None
    await sample(router)  # fresh readings close the breakers and release the queued request
    status, _ = await waiting
    assert status == 200


async def test_manual_pause_holds_and_resume_releases(two_gpus, http):
    router, _source, sims = two_gpus
    router.router.safety.pause(None, "maintenance")
    task = asyncio.create_task(generate(http, router))
    await wait_until(lambda: router.scheduler.queue_depth == 1)
    router.router.safety.resume(None)
    status, _ = await task
    assert status == 200
    router.router.safety.pause("gpu0", "swap")
    status, headers = await generate(http, router)
    assert headers["X-Backend-Used"] == "gpu1"
    router.router.safety.resume("gpu0")


async def test_unplugged_egpu_stops_taking_work_at_once_and_returns_when_plugged(two_gpus, http):
    router, _source, sims = two_gpus
    egpu = DiscoveredDevice(device_id="drm:0000:02:00.0", kind="nvidia", subsystem="drm", driver="nvidia",
                            vendor_id="0x10de", sys_path="/sys/devices/pci0000:00/0000:02:00.0/drm/card1",
                            integrated=False, bus_id="0000:02:00.0", name="card1")
    assert router.router.safety.device_event("remove", egpu) == ["gpu1"]
    assert router.router.safety.blocked("gpu1")[0].value == "device-removed"
    assert router.router.explain({"model": MODEL})["excluded"]["gpu1"].startswith("device-removed:")
    for _ in range(3):
        status, headers = await generate(http, router)
        assert status == 200 and headers["X-Backend-Used"] == "gpu0"
    assert sims["gpu1"].stats.requests == 0
    router.router.safety.device_event("add", egpu)
    assert router.router.safety.blocked("gpu1") is None
    assert "gpu1" not in router.router.explain({"model": MODEL})["excluded"]
