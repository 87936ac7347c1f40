"""Linking backends to devices: devices_for_backend rules and which backends a hot-plugged device touches."""

from __future__ import annotations

from ollamaproxy.hardware.discovery import DiscoveredDevice
from ollamaproxy.hardware.linking import affected_backends, devices_for_backend
from ollamaproxy.hardware.readings import DeviceReading, Snapshot


def reading(device_id, kind, source, **kw):
    return DeviceReading(device_id, kind, source, 1.0, **kw)


def snapshot(*readings):
    return Snapshot(1.0, {r.device_id: r for r in readings})


INTEL_LAPTOP = snapshot(
    reading("nvidia:0", "nvidia", "nvml", bus_id="0000:01:00.0", temperature_c=50.0),
    reading("nvidia:1", "nvidia", "nvml", bus_id="0000:3c:00.0", temperature_c=40.0),
    reading("cpu:package", "cpu", "rapl", power_w=20.0),
    reading("igpu:uncore", "igpu", "rapl", power_w=3.0, power_part_of="cpu:package"),
    reading("hwmon:coretemp:coretemp.0", "cpu", "hwmon", temperature_c=70.0),
    reading("cpu:load", "cpu", "psutil", utilisation_percent=12.0),
    reading("hwmon:nvme:nvme0", "nvme", "hwmon", temperature_c=40.0),
    reading("npu:0000:00:0b.0", "npu", "sysfs", bus_id="0000:00:0b.0"),
)

AMD_APU = snapshot(
    reading("hwmon:amdgpu:0000:c4:00.0", "igpu", "hwmon", bus_id="0000:c4:00.0", temperature_c=49.0),
    reading("hwmon:k10temp:0000:00:18.3", "cpu", "hwmon", temperature_c=60.0),
    reading("cpu:package", "cpu", "rapl"),
)


def test_nvidia_by_index_even_without_a_reading():
    assert devices_for_backend("nvidia", 1, INTEL_LAPTOP) == ["nvidia:1"]
    assert devices_for_backend("nvidia", 3, INTEL_LAPTOP) == ["nvidia:3"]  # missing → stale, not unlinked
    assert devices_for_backend("nvidia", 0, None) == ["nvidia:0"]
    assert devices_for_backend("NVIDIA", None, INTEL_LAPTOP) == ["nvidia:0", "nvidia:1"]


def test_igpu_takes_the_integrated_devices_and_the_cpu_die_temperature_when_it_has_none():
    assert devices_for_backend("igpu", None, INTEL_LAPTOP) == ["hwmon:coretemp:coretemp.0", "igpu:uncore"]
    assert devices_for_backend("igpu", 0, AMD_APU) == ["hwmon:amdgpu:0000:c4:00.0"]  # has its own sensor


def test_cpu_and_npu():
    assert devices_for_backend("cpu", None, INTEL_LAPTOP) == ["cpu:load", "cpu:package", "hwmon:coretemp:coretemp.0"]
    assert devices_for_backend("cpu", None, AMD_APU) == ["cpu:package", "hwmon:k10temp:0000:00:18.3"]
    assert devices_for_backend("npu", None, INTEL_LAPTOP) == ["npu:0000:00:0b.0"]
    assert devices_for_backend("npu", None, AMD_APU) == []
    assert devices_for_backend("tpu", None, INTEL_LAPTOP) == []


def test_device_match_overrides_the_rules():
    assert devices_for_backend("igpu", None, INTEL_LAPTOP, device_match="hwmon:nvme:*") == ["hwmon:nvme:nvme0"]
    assert devices_for_backend("cpu", None, INTEL_LAPTOP, device_match=["cpu:package", "nvidia:*"]) == \
        ["cpu:package", "nvidia:0", "nvidia:1"]


BACKENDS = [("nv0", "nvidia", 0), ("egpu", "nvidia", 1), ("igpu", "igpu", None), ("cpu", "cpu", None),
            ("npu", "npu", None)]


def card(bus_id, kind, integrated=False):
    return DiscoveredDevice(f"drm:{bus_id}", kind, "drm", None, None, f"/sys/devices/x/{bus_id}/drm/card9",
                            integrated, bus_id)


def test_egpu_leaving_touches_only_its_backend():
    assert affected_backends(card("0000:3c:00.0", "nvidia"), BACKENDS, INTEL_LAPTOP) == ["egpu"]


def test_nvidia_card_that_cannot_be_told_apart_touches_every_nvidia_backend():
    no_bus = snapshot(reading("nvidia:0", "nvidia", "nvidia-smi"))
    assert affected_backends(card("0000:3c:00.0", "nvidia"), BACKENDS, no_bus) == ["nv0", "egpu"]
    assert affected_backends(card("0000:3c:00.0", "nvidia"), BACKENDS, None) == ["nv0", "egpu"]


def test_npu_and_hwmon_devices_match_by_id():
    npu = DiscoveredDevice("npu:0000:00:0b.0", "npu", "accel", "intel_vpu", "8086", "/sys/x", False, "0000:00:0b.0")
    assert affected_backends(npu, BACKENDS, INTEL_LAPTOP) == ["npu"]
    apu = DiscoveredDevice("hwmon:amdgpu:0000:c4:00.0", "igpu", "hwmon", "amdgpu", "1002", "/sys/y", True,
                           "0000:c4:00.0")
    assert affected_backends(apu, BACKENDS, AMD_APU) == ["igpu"]
    assert affected_backends(card("0000:c4:00.0", "igpu", integrated=True), BACKENDS, AMD_APU) == ["igpu"]
    nvme = DiscoveredDevice("hwmon:nvme:nvme1", "nvme", "hwmon", "nvme", None, "/sys/z", False, None)
    assert affected_backends(nvme, BACKENDS, INTEL_LAPTOP) == []
