"""The sampler: ordered fallback by probe, failures as source errors, snapshots, run loop, its own CPU cost."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

import pytest

from fixtures.hw.fakesys import laptop
from ollamaproxy.hardware import readings as readings_module
from ollamaproxy.hardware.readings import BatteryReading, DeviceReading, Snapshot
from ollamaproxy.hardware.sampler import Sampler, default_sources
from ollamaproxy.hardware.source import ProbeResult, TelemetrySource


class FakeSource:
    """Scripted probe answers (last one repeats) and a read that returns one reading or raises."""

    def __init__(self, name, category, probes=(ProbeResult.OK,), *, power=1.0, error=None, battery=False):
        self.name, self.category = name, category
        self.detail = ""
        self.probes = list(probes)
        self.probe_calls = 0
        self.read_calls = 0
        self.power, self.error, self.battery = power, error, battery

    def probe(self):
        self.probe_calls += 1
        answer = self.probes[min(self.probe_calls, len(self.probes)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def read(self, now):
        self.read_calls += 1
        sum(range(20_000))  # some CPU to account for
        if self.error is not None:
            raise self.error
        if self.battery:
            return [BatteryReading(True, True, 40.0, "discharging", "sysfs", now)]
        return [DeviceReading(f"{self.name}:0", "other", self.name, now, power_w=self.power)]


@pytest.fixture
async def make_sampler():
    made = []

    def make(sources, **kw):
        sampler = Sampler(sources, **kw)
        made.append(sampler)
        return sampler

    yield make
    for sampler in made:
        sampler.close()


def test_sources_satisfy_the_protocol():
    for source in default_sources():
        assert isinstance(source, TelemetrySource)


def test_default_sources_are_an_ordered_list_with_nvml_first():
    sources = default_sources("/nonexistent", nvidia_smi="/opt/bin/nvidia-smi")
    assert [s.name for s in sources] == ["nvml", "nvidia-smi", "hwmon", "rapl", "battery", "accel", "psutil"]
    assert sources[0].category == sources[1].category == "nvidia"
    assert sources[1].executable == "/opt/bin/nvidia-smi"
    assert all(str(s.root) == "/nonexistent" for s in sources if hasattr(s, "root"))


async def test_first_source_that_probes_ok_serves_its_category(make_sampler):
    failing = FakeSource("a", "gpu", [ProbeResult.FAIL])
    fallback = FakeSource("b", "gpu")
    sampler = make_sampler([failing, fallback])
    for _ in range(2):
        snapshot = await sampler.sample_once()
        assert list(snapshot.devices) == ["b:0"]
    assert failing.probe_calls == 1 and failing.read_calls == 0  # FAIL is final
    assert fallback.probe_calls == 1 and fallback.read_calls == 2
    assert sampler.active == {"gpu": "b"}


async def test_deferred_source_is_asked_again_and_takes_over_when_ready(make_sampler):
    preferred = FakeSource("a", "gpu", [ProbeResult.DEFER, ProbeResult.OK])
    fallback = FakeSource("b", "gpu")
    sampler = make_sampler([preferred, fallback])
    assert list((await sampler.sample_once()).devices) == ["b:0"]
    assert list((await sampler.sample_once()).devices) == ["a:0"]
    assert sampler.probe_results == {"a": ProbeResult.OK, "b": ProbeResult.OK}


async def test_reprobe_asks_failed_sources_again(make_sampler):
    source = FakeSource("a", "gpu", [ProbeResult.FAIL, ProbeResult.OK])
    sampler = make_sampler([source])
    assert (await sampler.sample_once()).devices == {}
    sampler.reprobe()
    assert list((await sampler.sample_once()).devices) == ["a:0"]


async def test_failing_source_is_named_and_contributes_no_devices(make_sampler):
    broken = FakeSource("hwmon", "hwmon", error=OSError(5, "Input/output error"))
    fine = FakeSource("rapl", "rapl", power=12.0)
    sampler = make_sampler([broken, fine])
    snapshot = await sampler.sample_once()
    assert snapshot.source_errors == {"hwmon": "OSError: [Errno 5] Input/output error"}
    assert list(snapshot.devices) == ["rapl:0"]
    assert snapshot.total_power_w() == 12.0


async def test_probe_that_raises_counts_as_fail(make_sampler):
    source = FakeSource("a", "a", [RuntimeError("no such ioctl")])
    sampler = make_sampler([source])
    await sampler.sample_once()
    assert sampler.probe_results["a"] is ProbeResult.FAIL
    assert "RuntimeError: no such ioctl" in sampler.describe()["a"]["detail"]


async def test_snapshot_is_published_immutable_and_timestamped(make_sampler, caplog):
    seen = []
    now = [100.0]
    sampler = make_sampler([FakeSource("a", "a", power=5.0), FakeSource("battery", "battery", battery=True)],
                           clock=lambda: now[0], on_snapshot=seen.append)
    snapshot = await sampler.sample_once()
    assert seen == [snapshot] and sampler.latest is snapshot
    assert snapshot.taken_at == 100.0 and snapshot.devices["a:0"].taken_at == 100.0
    assert snapshot.battery == BatteryReading(True, True, 40.0, "discharging", "sysfs", 100.0)
    now[0] = 103.5
    assert snapshot.devices["a:0"].age(now[0]) == 3.5
    with pytest.raises(TypeError):
        snapshot.devices["x"] = snapshot.devices["a:0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.taken_at = 0.0

    def explode(_snapshot):
        raise ValueError("subscriber bug")

    sampler.on_snapshot = explode
    with caplog.at_level(logging.ERROR, logger="ollamaproxy.hardware.sampler"):
        await sampler.sample_once()  # a broken subscriber does not break sampling
    assert "on_snapshot callback failed" in caplog.text


async def test_run_samples_until_cancelled_and_counts_its_cost(make_sampler):
    task = None
    seen = []

    def on_snapshot(snapshot):
        seen.append(snapshot)
        if len(seen) == 3:
            task.cancel()

    sampler = make_sampler([FakeSource("a", "a")], interval=0.0, on_snapshot=on_snapshot)
    task = asyncio.create_task(sampler.run())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sampler.samples == 3 and sampler.latest is seen[-1]
    assert sampler.cpu_seconds > 0.0


def test_sampler_rejects_bad_settings():
    with pytest.raises(ValueError, match="interval"):
        Sampler([], interval=-1)
    with pytest.raises(ValueError, match="read_timeout"):
        Sampler([], read_timeout=0)


def test_total_power_and_hottest():
    r = DeviceReading
    snapshot = Snapshot(1.0, {
        "cpu:package": r("cpu:package", "cpu", "rapl", 1.0, power_w=20.0),
        "igpu:uncore": r("igpu:uncore", "igpu", "rapl", 1.0, power_w=6.0, power_part_of="cpu:package"),
        "nvidia:0": r("nvidia:0", "nvidia", "nvml", 1.0, power_w=250.0, temperature_c=70.0),
        "hwmon:nvme:nvme0": r("hwmon:nvme:nvme0", "nvme", "hwmon", 1.0, temperature_c=45.0),
        "nvidia:1": r("nvidia:1", "nvidia", "nvml", 1.0, error="GPU is lost"),
    })
    assert snapshot.total_power_w() == 270.0  # uncore is inside the package: counted once
    assert snapshot.hottest().device_id == "nvidia:0"
    # the package itself missing: its part is all we know, so it counts
    partial = Snapshot(1.0, {"igpu:uncore": snapshot.devices["igpu:uncore"]})
    assert partial.total_power_w() == 6.0
    empty = Snapshot(1.0, {"nvidia:1": snapshot.devices["nvidia:1"]})
    assert empty.total_power_w() is None and empty.hottest() is None
    assert set(readings_module.DEVICE_KINDS) >= {d.kind for d in snapshot.devices.values()}


async def test_default_sources_on_a_fake_tree(tmp_path, monkeypatch, make_sampler):
    sys = laptop(tmp_path / "sys")
    sys.supply("BAT0", type="Battery", status="Discharging", capacity=77)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    sampler = make_sampler(default_sources(str(sys.root)))
    snapshot = await sampler.sample_once()
    assert snapshot.source_errors == {}
    assert snapshot.devices["hwmon:amdgpu:0000:03:00.0"].power_w == pytest.approx(183.0)
    assert snapshot.battery.percent == 77.0 and snapshot.battery.on_battery is True
    assert "cpu:load" in snapshot.devices
    assert sampler.probe_results["nvidia-smi"] is ProbeResult.FAIL


async def test_default_sources_on_this_machine(make_sampler):
    """What a benchmark does: the real /sys, whatever it has; sampling must work and count its cost."""
    sampler = make_sampler(default_sources())
    for _ in range(2):
        snapshot = await sampler.sample_once()
    assert sampler.samples == 2 and sampler.cpu_seconds > 0.0
    assert snapshot.devices["cpu:load"].utilisation_percent is not None  # second round has a figure
    for name, result in sampler.probe_results.items():
        assert isinstance(result, ProbeResult), name
    assert os.path.isdir("/sys")
