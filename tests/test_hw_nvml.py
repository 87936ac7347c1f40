"""NVML source with pynvml replaced at its function boundary: values, throttle bits, failures, hangs, fallback."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pynvml
import pytest

from conftest import wait_until
from ollamaproxy.hardware.nvidia_smi import NvidiaSmiSource
from ollamaproxy.hardware.nvml import NvmlSource
from ollamaproxy.hardware.readings import DeviceReading
from ollamaproxy.hardware.sampler import Sampler
from ollamaproxy.hardware.source import ProbeResult
from ollamaproxy.hardware.throttle import decode_throttle_reasons

MIB = 1024 * 1024


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # pynvml maps the code to its subclass (NVMLError_NotSupported, ...)


@dataclass
class FakeGpu:
    name: str | bytes = "NVIDIA GeForce RTX 4090"
    power_mw: int = 312_500
    limit_mw: int = 450_000
    temperature: int = 64
    fan: int | None = 48                   # None → NVML_ERROR_NOT_SUPPORTED (no fan)
    util: int = 97
    used: int = 20_000 * MIB
    total: int = 24_564 * MIB
    reasons: int = 0
    bus_id: bytes = b"00000000:01:00.0"
    lost: bool = False                     # every call → NVML_ERROR_GPU_IS_LOST
    hang: threading.Event | None = None    # power query blocks until set


@dataclass
class FakeNvml:
    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: int | None = None
    calls: list[str] = field(default_factory=list)
    hang_started: threading.Event = field(default_factory=threading.Event)

    def install(self, monkeypatch: pytest.MonkeyPatch, *, event_reasons: bool = True) -> None:
        def gpu(handle) -> FakeGpu:
            g = self.gpus[handle.index]
            if g.lost:
                raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
            return g

        def init():
            self.calls.append("init")
            if self.init_error is not None:
                raise nvml_error(self.init_error)

        def power(handle):
            g = gpu(handle)
            if g.hang is not None:
                self.hang_started.set()
                g.hang.wait()
            return g.power_mw

        def fan(handle):
            g = gpu(handle)
            if g.fan is None:
                raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
            return g.fan

        patches = {
            "nvmlInit": init,
            "nvmlShutdown": lambda: self.calls.append("shutdown"),
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": lambda i: SimpleNamespace(index=i),
            "nvmlDeviceGetName": lambda h: gpu(h).name,
            "nvmlDeviceGetPowerUsage": power,
            "nvmlDeviceGetEnforcedPowerLimit": lambda h: gpu(h).limit_mw,
            "nvmlDeviceGetTemperature": lambda h, sensor: gpu(h).temperature,
            "nvmlDeviceGetFanSpeed": fan,
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=gpu(h).util, memory=10),
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=gpu(h).used, total=gpu(h).total,
                                                                 free=gpu(h).total - gpu(h).used),
            "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: gpu(h).reasons,
            "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=gpu(h).bus_id),
        }
        if event_reasons:
            patches["nvmlDeviceGetCurrentClocksEventReasons"] = lambda h: gpu(h).reasons
        else:
            monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", raising=False)
        for name, fn in patches.items():
            monkeypatch.setattr(pynvml, name, fn)


@pytest.fixture
def fake_nvml(monkeypatch):
    fake = FakeNvml(gpus=[
        FakeGpu(reasons=0x1 | 0x2),
        FakeGpu(name=b"NVIDIA H100 80GB HBM3", power_mw=698_000, limit_mw=700_000, temperature=83, fan=None,
                util=100, used=70_000 * MIB, total=81_559 * MIB, reasons=0x4 | 0x40, bus_id=b"00000000:3C:00.0"),
    ])
    fake.install(monkeypatch)
    yield fake
    for g in fake.gpus:  # never leave a worker blocked
        if g.hang is not None:
            g.hang.set()


# ================================================================ throttle bits


@pytest.mark.parametrize("mask, names, throttling", [
    (0x0, (), False),
    (0x1, ("gpu_idle",), False),
    (0x2, ("applications_clocks_setting",), False),
    (0x1 | 0x2, ("gpu_idle", "applications_clocks_setting"), False),
    (0x10, ("sync_boost",), False),
    (0x100, ("display_clock_setting",), False),
    (0x4, ("sw_power_cap",), True),
    (0x8, ("hw_slowdown",), True),
    (0x20, ("sw_thermal_slowdown",), True),
    (0x40, ("hw_thermal_slowdown",), True),
    (0x80, ("hw_power_brake_slowdown",), True),
    (0x200, ("board_limit",), True),
    (0x400, ("reliability",), True),
    (0x1 | 0x4, ("gpu_idle", "sw_power_cap"), True),
    (0x1 | 0x800, ("gpu_idle", "unknown:0x800"), True),  # a bit we cannot name is not taken as fine
])
def test_throttle_reasons_decoded_bit_by_bit(mask, names, throttling):
    assert decode_throttle_reasons(mask) == (names, throttling)


def test_throttle_bits_match_pynvml_constants():
    decoded = {
        pynvml.nvmlClocksEventReasonGpuIdle: "gpu_idle",
        pynvml.nvmlClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
        pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
        pynvml.nvmlClocksThrottleReasonHwSlowdown: "hw_slowdown",
        pynvml.nvmlClocksEventReasonSyncBoost: "sync_boost",
        pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
        pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
        pynvml.nvmlClocksEventReasonDisplayClockSetting: "display_clock_setting",
    }
    for bit, name in decoded.items():
        assert decode_throttle_reasons(bit)[0] == (name,)


# ================================================================ NvmlSource


def test_nvml_reads_every_gpu(fake_nvml):
    source = NvmlSource()
    assert source.probe() is ProbeResult.OK
    gpu0, gpu1 = source.read(now=42.0)

    assert gpu0 == DeviceReading(
        device_id="nvidia:0", kind="nvidia", source="nvml", taken_at=42.0, label="NVIDIA GeForce RTX 4090",
        power_w=312.5, power_limit_w=450.0, temperature_c=64.0, fan_percent=48.0, utilisation_percent=97.0,
        memory_used_bytes=20_000 * MIB, memory_total_bytes=24_564 * MIB,
        throttle_reasons=("gpu_idle", "applications_clocks_setting"), throttling=False, bus_id="0000:01:00.0")
    assert gpu1.label == "NVIDIA H100 80GB HBM3"  # bytes from older pynvml decoded
    assert gpu1.fan_percent is None               # not supported: unknown, not 0
    assert gpu1.throttle_reasons == ("sw_power_cap", "hw_thermal_slowdown") and gpu1.throttling
    assert gpu1.bus_id == "0000:3c:00.0"
    source.close()
    assert fake_nvml.calls == ["init", "shutdown"]


def test_nvml_uses_throttle_reasons_where_event_reasons_are_missing(monkeypatch):
    fake = FakeNvml(gpus=[FakeGpu(reasons=0x8)])
    fake.install(monkeypatch, event_reasons=False)
    source = NvmlSource()
    assert source.probe() is ProbeResult.OK
    [gpu] = source.read(now=0.0)
    assert gpu.throttle_reasons == ("hw_slowdown",) and gpu.throttling


def test_nvml_lost_gpu_is_an_error_reading_and_the_others_still_read(fake_nvml):
    fake_nvml.gpus[0].lost = True
    source = NvmlSource()
    source.probe()
    lost, fine = source.read(now=1.0)
    assert lost.device_id == "nvidia:0" and "GPU is lost" in lost.error
    assert lost.power_w is None and lost.temperature_c is None and lost.memory_total_bytes is None
    assert fine.error is None and fine.power_w == 698.0


def test_nvml_missing_library_fails_probe(fake_nvml):
    fake_nvml.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    source = NvmlSource()
    assert source.probe() is ProbeResult.FAIL
    assert "nvmlInit failed" in source.detail


def test_nvml_without_gpus_defers(fake_nvml):
    fake_nvml.gpus.clear()
    source = NvmlSource()
    assert source.probe() is ProbeResult.DEFER
    fake_nvml.gpus.append(FakeGpu())  # an eGPU arrives
    assert source.probe() is ProbeResult.OK
    assert fake_nvml.calls == ["init"]  # asked again without a second nvmlInit


# ================================================================ through the sampler


class StaticSource:
    """A sysfs-like source that always answers, to show the rest of a round is not held up."""

    name = "static"
    category = "static"
    detail = ""

    def probe(self):
        return ProbeResult.OK

    def read(self, now):
        return [DeviceReading("cpu:package", "cpu", "rapl", now, power_w=15.0)]


async def test_hung_nvml_call_is_reported_within_read_timeout_and_later_samples_complete(fake_nvml):
    release = threading.Event()
    fake_nvml.gpus[1].hang = release
    sampler = Sampler([NvmlSource(), StaticSource()], read_timeout=1.0)
    try:
        first = await sampler.sample_once()
        assert fake_nvml.hang_started.is_set()
        assert "no answer within 1s" in first.source_errors["nvml"]
        assert "nvidia:0" not in first.devices and "nvidia:1" not in first.devices  # no stale or default values
        assert first.devices["cpu:package"].power_w == 15.0

        second = await sampler.sample_once()  # does not wait on the hung thread again
        assert second.source_errors["nvml"].startswith("still hanging")
        assert second.devices["cpu:package"].power_w == 15.0
        assert sampler.busy() == ["nvml"]

        release.set()
        await wait_until(lambda: not sampler.busy(), message="the hung NVML call to return")
        fake_nvml.gpus[1].hang = None
        third = await sampler.sample_once()
        assert third.source_errors == {}
        assert third.devices["nvidia:1"].power_w == 698.0
        assert sampler.samples == 3
    finally:
        release.set()
        sampler.close()


async def test_nvml_missing_falls_back_to_nvidia_smi(fake_nvml, tmp_path):
    fake_nvml.init_error = pynvml.NVML_ERROR_DRIVER_NOT_LOADED
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, NVIDIA GeForce RTX 3060, 00000000:01:00.0, 35.20, 170.00, 41, 30, 3,"
                   " 812, 12288, 0x0000000000000001'\n")
    smi.chmod(0o755)
    sampler = Sampler([NvmlSource(), NvidiaSmiSource(str(smi), timeout=10.0)], read_timeout=20.0)
    try:
        snapshot = await sampler.sample_once()
        assert sampler.probe_results == {"nvml": ProbeResult.FAIL, "nvidia-smi": ProbeResult.OK}
        assert sampler.active["nvidia"] == "nvidia-smi"
        gpu = snapshot.devices["nvidia:0"]
        assert (gpu.source, gpu.power_w, gpu.temperature_c, gpu.throttling) == ("nvidia-smi", 35.2, 41.0, False)
        assert snapshot.source_errors == {}
    finally:
        sampler.close()


async def test_nvidia_smi_is_not_run_while_nvml_works(fake_nvml, tmp_path):
    smi = tmp_path / "nvidia-smi"
    marker = tmp_path / "ran"
    smi.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    smi.chmod(0o755)
    sampler = Sampler([NvmlSource(), NvidiaSmiSource(str(smi), timeout=10.0)], read_timeout=20.0)
    try:
        snapshot = await sampler.sample_once()
        assert snapshot.devices["nvidia:0"].source == "nvml"
        assert "nvidia-smi" not in sampler.probe_results and not marker.exists()
    finally:
        sampler.close()
