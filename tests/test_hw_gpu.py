"""Real NVIDIA hardware (run on a GPU machine): NVML values are sane, nvidia-smi agrees, the sampler picks NVML."""

from __future__ import annotations

import re
import shutil

import pytest

from ollamaproxy.hardware.nvidia_smi import NvidiaSmiSource
from ollamaproxy.hardware.nvml import NvmlSource
from ollamaproxy.hardware.sampler import Sampler, default_sources
from ollamaproxy.hardware.source import ProbeResult

pytestmark = pytest.mark.gpu


@pytest.fixture
def nvml():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        pytest.skip(f"no NVIDIA GPU here: nvmlInit failed: {exc}")
    count = pynvml.nvmlDeviceGetCount()
    pynvml.nvmlShutdown()
    if count == 0:
        pytest.skip("NVML loads but sees no GPU")
    source = NvmlSource()
    assert source.probe() is ProbeResult.OK, source.detail
    yield source
    source.close()


def test_real_nvml_readings_are_sane(nvml):
    readings = nvml.read(now=0.0)
    assert readings
    for gpu in readings:
        assert gpu.error is None, gpu.error
        assert gpu.device_id.startswith("nvidia:") and gpu.label
        assert gpu.power_w is not None and 0.0 < gpu.power_w < 2000.0
        assert gpu.power_limit_w is None or gpu.power_limit_w > 0.0
        assert gpu.temperature_c is not None and 0.0 < gpu.temperature_c < 120.0
        assert gpu.utilisation_percent is not None and 0.0 <= gpu.utilisation_percent <= 100.0
        assert gpu.memory_total_bytes and 0 <= gpu.memory_used_bytes <= gpu.memory_total_bytes
        assert gpu.fan_percent is None or 0.0 <= gpu.fan_percent <= 100.0
        assert gpu.bus_id and re.fullmatch(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]", gpu.bus_id)
        print(gpu)


def test_real_nvidia_smi_agrees_with_nvml(nvml):
    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed on this GPU machine")
    from_nvml = {r.device_id: r for r in nvml.read(now=0.0)}
    smi = NvidiaSmiSource(timeout=10.0)
    assert smi.probe() is ProbeResult.OK
    from_smi = {r.device_id: r for r in smi.read(now=0.0)}
    assert set(from_smi) == set(from_nvml)
    for device_id, reading in from_smi.items():
        assert reading.bus_id == from_nvml[device_id].bus_id
        assert reading.label == from_nvml[device_id].label
        # nvidia-smi reports MiB: equal to NVML's bytes within a MiB
        assert abs(reading.memory_total_bytes - from_nvml[device_id].memory_total_bytes) < 1024 * 1024


async def test_sampler_on_the_real_machine_uses_nvml(nvml):
    sampler = Sampler(default_sources(), read_timeout=10.0)
    try:
        snapshot = await sampler.sample_once()
        assert sampler.active["nvidia"] == "nvml"
        assert "nvidia:0" in snapshot.devices and "nvml" not in snapshot.source_errors
        assert snapshot.total_power_w() is not None and snapshot.hottest() is not None
        assert "nvidia-smi" not in sampler.probe_results  # the fallback was never needed
    finally:
        sampler.close()
