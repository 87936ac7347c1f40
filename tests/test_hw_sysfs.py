"""Sysfs sources on fake trees: hwmon by driver name, RAPL energy deltas with wrap-around, batteries, NPUs."""

from __future__ import annotations

import pytest

from fixtures.hw.fakesys import FakeSys, laptop
from ollamaproxy.hardware import powercap as powercap_module
from ollamaproxy.hardware.accel import AccelSource
from ollamaproxy.hardware.battery import BatterySource
from ollamaproxy.hardware.classify import gpu_kind, hwmon_kind, is_integrated_gpu
from ollamaproxy.hardware.hwmon import HwmonSource
from ollamaproxy.hardware.powercap import PowercapSource, energy_delta
from ollamaproxy.hardware.sampler import Sampler
from ollamaproxy.hardware.source import ProbeResult

GIB = 1024**3


def by_id(readings):
    return {r.device_id: r for r in readings}


# ================================================================ classification (pure)


@pytest.mark.parametrize("vendor, driver, bus, upstream, kind", [
    ("8086", "i915", "0000:00:02.0", "pci0000:00", "igpu"),        # Intel iGPU is 00:02.0
    ("8086", "xe", "0000:00:02.0", "pci0000:00", "igpu"),
    ("8086", "i915", "0000:03:00.0", "0000:00:1c.0", "dgpu"),      # Arc behind a switch
    ("8086", "xe", "0000:05:00.0", "0000:00:01.0", "dgpu"),
    ("1002", "amdgpu", "0000:c4:00.0", "0000:00:08.1", "igpu"),    # APU: internal GPP bridge 00:08.x
    ("1002", "amdgpu", "0000:03:00.0", "0000:00:01.1", "dgpu"),    # Radeon card in a slot
    ("1002", "amdgpu", "0000:03:00.0", None, "dgpu"),              # topology unknown → not assumed integrated
    ("10de", "nvidia", "0000:01:00.0", "0000:00:01.0", "nvidia"),
    ("10de", "nouveau", "0000:01:00.0", "0000:00:01.0", "nvidia"),
    ("1234", "bochs-drm", "0000:00:02.0", "pci0000:00", "other"),
])
def test_gpu_kind_rules(vendor, driver, bus, upstream, kind):
    assert gpu_kind(vendor, driver, bus, upstream) == kind
    assert is_integrated_gpu(vendor, driver, bus, upstream) is (kind == "igpu")


def test_hwmon_kind_by_driver_name():
    assert hwmon_kind("coretemp", None) == "cpu"
    assert hwmon_kind("k10temp", "other") == "cpu"
    assert hwmon_kind("nvme", None) == "nvme"
    assert hwmon_kind("amdgpu", "igpu") == "igpu"
    assert hwmon_kind("amdgpu", None) == "dgpu"
    assert hwmon_kind("acpitz", None) == "other"


# ================================================================ hwmon


def test_hwmon_reads_every_driver_by_name(tmp_path):
    sys = laptop(tmp_path)
    source = HwmonSource(sys.root)
    assert source.probe() is ProbeResult.OK
    readings = by_id(source.read(now=100.0))

    assert set(readings) == {
        "hwmon:coretemp:coretemp.0", "hwmon:k10temp:0000:00:18.3", "hwmon:amdgpu:0000:03:00.0",
        "hwmon:amdgpu:0000:c4:00.0", "hwmon:i915:0000:05:00.0", "hwmon:nvme:nvme0", "hwmon:acpitz:hwmon6",
    }
    for reading in readings.values():
        assert reading.source == "hwmon" and reading.taken_at == 100.0 and reading.error is None

    core = readings["hwmon:coretemp:coretemp.0"]
    assert (core.kind, core.temperature_c, core.label) == ("cpu", 71.0, "coretemp Package id 0")  # not the hot core

    k10 = readings["hwmon:k10temp:0000:00:18.3"]
    assert (k10.kind, k10.temperature_c) == ("cpu", 80.5)  # Tctl (no Tdie here)

    dgpu = readings["hwmon:amdgpu:0000:03:00.0"]
    assert dgpu.kind == "dgpu" and dgpu.bus_id == "0000:03:00.0"
    assert dgpu.power_w == pytest.approx(183.0) and dgpu.power_limit_w == pytest.approx(250.0)
    assert dgpu.temperature_c == 58.0  # edge, not junction
    assert dgpu.fan_percent == pytest.approx(40.0)
    assert dgpu.utilisation_percent == 37.0
    assert (dgpu.memory_used_bytes, dgpu.memory_total_bytes) == (2 * GIB, 16 * GIB)
    assert dgpu.power_part_of is None

    apu = readings["hwmon:amdgpu:0000:c4:00.0"]
    assert apu.kind == "igpu" and apu.power_w == pytest.approx(9.0) and apu.power_part_of == "cpu:package"
    assert apu.fan_percent is None and apu.power_limit_w is None

    nvme = readings["hwmon:nvme:nvme0"]
    assert (nvme.kind, nvme.temperature_c) == ("nvme", 41.85)

    assert readings["hwmon:acpitz:hwmon6"].kind == "other"


def test_hwmon_energy_counter_gives_power_from_the_second_read(tmp_path):
    sys = laptop(tmp_path)
    source = HwmonSource(sys.root)
    arc_id = "hwmon:i915:0000:05:00.0"
    energy = sys.root / "class" / "hwmon" / "hwmon4" / "energy1_input"

    first = by_id(source.read(now=10.0))[arc_id]
    assert first.kind == "dgpu" and first.power_w is None and first.power_limit_w == pytest.approx(190.0)

    sys.set(energy, 1_000_000_000 + 30_000_000)  # +30 J in 2 s
    assert by_id(source.read(now=12.0))[arc_id].power_w == pytest.approx(15.0)

    sys.set(energy, 5)  # counter reset (driver reload): no guess, new baseline
    assert by_id(source.read(now=13.0))[arc_id].power_w is None
    sys.set(energy, 5 + 4_000_000)
    assert by_id(source.read(now=14.0))[arc_id].power_w == pytest.approx(4.0)


def test_hwmon_device_that_fails_to_read_says_so_and_others_still_read(tmp_path):
    sys = laptop(tmp_path)
    broken = sys.root / "class" / "hwmon" / "hwmon2" / "power1_average"
    broken.unlink()
    broken.mkdir()  # reading it raises IsADirectoryError, like EIO from a sleeping device
    readings = by_id(HwmonSource(sys.root).read(now=1.0))
    failed = readings["hwmon:amdgpu:0000:03:00.0"]
    assert failed.error and "IsADirectoryError" in failed.error
    assert failed.power_w is None and failed.temperature_c is None and failed.kind == "dgpu"
    assert readings["hwmon:coretemp:coretemp.0"].temperature_c == 71.0


def test_hwmon_probe_answers(tmp_path):
    assert HwmonSource(tmp_path).probe() is ProbeResult.FAIL
    FakeSys(tmp_path).class_dir("hwmon")
    assert HwmonSource(tmp_path).probe() is ProbeResult.DEFER


def test_hwmon_without_a_preferred_label_takes_the_hottest_sensor(tmp_path):
    sys = FakeSys(tmp_path)
    sys.hwmon(sys.platform("nct6775.656"), "nct6798", temp1_input=30000, temp2_input=45500, temp7_input=41000)
    reading = HwmonSource(sys.root).read(now=0.0)[0]
    assert reading.device_id == "hwmon:nct6798:nct6775.656" and reading.temperature_c == 45.5


# ================================================================ powercap / RAPL


def rapl_tree(tmp_path, max_range=1_000_000_000):
    sys = FakeSys(tmp_path)
    package = sys.rapl_zone("intel-rapl:0", "package-0", energy_uj=990_000_000, max_energy_range_uj=max_range,
                            constraint_0_name="long_term", constraint_0_power_limit_uw=28_000_000)
    sys.rapl_zone("intel-rapl:0:0", "core", energy_uj=1)
    uncore = sys.rapl_zone("intel-rapl:0:1", "uncore", energy_uj=500_000_000, max_energy_range_uj=max_range)
    sys.rapl_zone("intel-rapl:0:2", "dram", energy_uj=1)
    sys.rapl_zone("intel-rapl:1", "psys", energy_uj=1)
    sys.rapl_zone("intel-rapl-mmio:0", "package-0", energy_uj=1)
    return sys, package, uncore


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_rapl_power_from_energy_deltas_with_wrap_around_and_an_injected_clock(tmp_path):
    sys, package, uncore = rapl_tree(tmp_path)
    clock = FakeClock(1000.0)
    source = PowercapSource(sys.root)
    sampler = Sampler([source], clock=clock)
    try:
        first = await sampler.sample_once()
        assert set(first.devices) == {"cpu:package", "igpu:uncore"}  # core, dram, psys, mmio not read
        pkg = first.devices["cpu:package"]
        assert (pkg.kind, pkg.source, pkg.taken_at, pkg.power_w) == ("cpu", "rapl", 1000.0, None)
        assert pkg.power_limit_w == pytest.approx(28.0)

        clock.now = 1002.0
        sys.set(package / "energy_uj", 10_000_000)        # wrapped: 10 J to the top + 10 J after
        sys.set(uncore / "energy_uj", 506_000_000)        # +6 J
        second = await sampler.sample_once()
        assert second.devices["cpu:package"].power_w == pytest.approx(10.0)
        assert second.devices["cpu:package"].taken_at == 1002.0
        gpu = second.devices["igpu:uncore"]
        assert gpu.kind == "igpu" and gpu.power_w == pytest.approx(3.0) and gpu.power_part_of == "cpu:package"
        assert second.total_power_w() == pytest.approx(10.0)  # the uncore is inside the package
    finally:
        sampler.close()


def test_energy_delta_rules():
    assert energy_delta(100, 250, 1000) == 150
    assert energy_delta(900, 100, 1000) == 200           # one wrap
    assert energy_delta(900, 100, None) is None          # range unknown: no guess
    assert energy_delta(2000, 100, 1000) is None         # impossible previous value


def test_rapl_unwrappable_counter_gives_no_power(tmp_path):
    sys, package, _ = rapl_tree(tmp_path)
    (package / "max_energy_range_uj").unlink()
    source = PowercapSource(sys.root)
    source.read(now=1.0)
    sys.set(package / "energy_uj", 5)
    assert by_id(source.read(now=2.0))["cpu:package"].power_w is None


def test_rapl_probe_fails_when_energy_is_root_only(tmp_path, monkeypatch):
    sys, _, _ = rapl_tree(tmp_path)

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(powercap_module, "read_int", denied)
    source = PowercapSource(sys.root)
    assert source.probe() is ProbeResult.FAIL
    assert "root-only" in source.detail


def test_rapl_probe_without_zones_fails(tmp_path):
    assert PowercapSource(tmp_path).probe() is ProbeResult.FAIL
    FakeSys(tmp_path).class_dir("powercap")
    assert PowercapSource(tmp_path).probe() is ProbeResult.FAIL


def test_rapl_second_package_has_its_own_id(tmp_path):
    sys = FakeSys(tmp_path)
    sys.rapl_zone("intel-rapl:0", "package-0", energy_uj=0)
    sys.rapl_zone("intel-rapl:1", "package-1", energy_uj=0)
    assert [r.device_id for r in PowercapSource(sys.root).read(now=0.0)] == ["cpu:package", "cpu:package:1"]


# ================================================================ power_supply


def read_battery(root):
    source = BatterySource(root)
    assert source.probe() is ProbeResult.OK
    [reading] = source.read(now=5.0)
    return reading


def test_battery_on_battery(tmp_path):
    sys = FakeSys(tmp_path)
    sys.supply("AC", type="Mains", online=0)
    sys.supply("BAT0", type="Battery", present=1, status="Discharging", capacity=55)
    reading = read_battery(sys.root)
    assert (reading.present, reading.on_battery, reading.percent, reading.state) == (True, True, 55.0, "discharging")
    assert (reading.source, reading.taken_at) == ("sysfs", 5.0)


def test_battery_charging_from_energy_counters(tmp_path):
    sys = FakeSys(tmp_path)
    sys.supply("ADP1", type="Mains", online=1)
    sys.supply("BAT0", type="Battery", present=1, status="Charging", capacity=99,
               energy_now=30_000_000, energy_full=60_000_000)
    reading = read_battery(sys.root)
    assert (reading.on_battery, reading.percent, reading.state) == (False, 50.0, "charging")


def test_battery_full_on_usb_c(tmp_path):
    sys = FakeSys(tmp_path)
    sys.supply("ucsi-source-psy-USBC000:001", type="USB", online=1)
    sys.supply("BAT0", type="Battery", present=1, status="Full", capacity=100)
    reading = read_battery(sys.root)
    assert (reading.on_battery, reading.percent, reading.state) == (False, 100.0, "full")


def test_two_batteries_combine_by_energy(tmp_path):
    sys = FakeSys(tmp_path)
    sys.supply("AC", type="Mains", online=0)
    sys.supply("BAT0", type="Battery", status="Discharging", energy_now=10_000_000, energy_full=20_000_000)
    sys.supply("BAT1", type="Battery", status="Not charging", energy_now=30_000_000, energy_full=30_000_000)
    reading = read_battery(sys.root)
    assert (reading.on_battery, reading.percent, reading.state) == (True, 80.0, "discharging")


def test_battery_state_alone_decides_without_a_mains_supply(tmp_path):
    sys = FakeSys(tmp_path)
    sys.supply("BAT0", type="Battery", status="Discharging", capacity=12)
    assert read_battery(sys.root).on_battery is True
    sys.set(sys.root / "class" / "power_supply" / "BAT0" / "status", "Unknown")
    reading = read_battery(sys.root)
    assert (reading.on_battery, reading.state) == (None, "unknown")  # cannot tell: says so


def test_desktop_with_only_a_mouse_battery_is_not_on_battery(tmp_path):
    sys = FakeSys(tmp_path)
    sys.supply("hidpp_battery_0", type="Battery", scope="Device", status="Discharging", capacity=20)
    reading = read_battery(sys.root)
    assert (reading.present, reading.on_battery, reading.percent) == (False, False, None)


def test_battery_probe_fails_without_power_supply_class(tmp_path):
    assert BatterySource(tmp_path).probe() is ProbeResult.FAIL


# ================================================================ accel (NPU)


def test_npu_busy_time_becomes_load(tmp_path):
    sys = FakeSys(tmp_path)
    vpu = sys.pci("0000:00:0b.0", vendor="0x8086", driver="intel_vpu", npu_busy_time_us=1_000_000)
    sys.accel(vpu, 0)
    xdna = sys.pci("0000:c5:00.1", vendor="0x1022", driver="amdxdna", upstream="0000:00:08.2")
    sys.accel(xdna, 1)
    source = AccelSource(sys.root)
    assert source.probe() is ProbeResult.OK

    first = by_id(source.read(now=1.0))
    assert set(first) == {"npu:0000:00:0b.0", "npu:0000:c5:00.1"}
    assert first["npu:0000:00:0b.0"].kind == "npu" and first["npu:0000:00:0b.0"].utilisation_percent is None
    assert first["npu:0000:c5:00.1"].label == "amdxdna" and first["npu:0000:c5:00.1"].source == "sysfs"

    sys.set(vpu / "npu_busy_time_us", 1_250_000)
    second = by_id(source.read(now=2.0))
    assert second["npu:0000:00:0b.0"].utilisation_percent == pytest.approx(25.0)
    assert second["npu:0000:c5:00.1"].utilisation_percent is None  # no busy counter: unknown, not 0


def test_accel_probe_defers_until_an_npu_appears(tmp_path):
    assert AccelSource(tmp_path).probe() is ProbeResult.FAIL
    sys = FakeSys(tmp_path)
    sys.class_dir("accel")
    assert AccelSource(tmp_path).probe() is ProbeResult.DEFER
    sys.accel(sys.pci("0000:00:0b.0", vendor="0x8086", driver="intel_vpu"))
    assert AccelSource(tmp_path).probe() is ProbeResult.OK
