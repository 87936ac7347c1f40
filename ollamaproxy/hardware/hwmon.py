"""hwmon sensors (temperatures, fans, GPU power and energy counters) matched by driver name under a sysfs root.

One reading per hwmon device, id "hwmon:<driver name>:<parent device>" (for example
"hwmon:amdgpu:0000:03:00.0", "hwmon:coretemp:coretemp.0", "hwmon:nvme:nvme0"): stable across
boots, unlike hwmonN. Per device:

- temperature: the sensor whose label the driver's entry in TEMPERATURE_LABELS names first
  (coretemp "Package id", k10temp "Tdie" then "Tctl", amdgpu "edge", nvme "Composite",
  xe "pkg"); without such a label, the hottest temp*_input.
- fan: pwm1 duty (0–255) as a percent, else fan1_input / fan1_max; RPM alone is not a percent.
- power: power1_average, else power1_input (µW); else the energy1_input (µJ) counter's rate
  between two reads (i915/xe), so the first read of a counter has no power yet.
- power limit: power1_cap, else power1_max.
- GPU load and memory from the PCI device (amdgpu `gpu_busy_percent`, `mem_info_vram_*`).

A device whose files fail to read this round is a reading with `error`; the source fails as a
whole only when the hwmon class directory cannot be listed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .classify import GPU_DRIVERS, gpu_kind, hwmon_kind, vendor_hex
from .readings import DeviceReading
from .source import ProbeResult, SourceError
from .sysfs import link_name, pci_parent, read_int, read_text

TEMPERATURE_LABELS: dict[str, tuple[str, ...]] = {
    "coretemp": ("package id",),
    "k10temp": ("tdie", "tctl"),
    "zenpower": ("tdie", "tctl"),
    "amdgpu": ("edge",),
    "nvme": ("composite",),
    "xe": ("pkg",),
    "i915": ("pkg",),
}
PACKAGE_ID = "cpu:package"


class HwmonSource:
    name = "hwmon"
    category = "hwmon"

    def __init__(self, sysfs_root: str | os.PathLike[str] = "/sys"):
        self.root = Path(sysfs_root)
        self.detail = ""
        self._energy: dict[str, tuple[int, float]] = {}

    @property
    def class_dir(self) -> Path:
        return self.root / "class" / "hwmon"

    def probe(self) -> ProbeResult:
        if not self.class_dir.is_dir():
            self.detail = f"{self.class_dir} does not exist"
            return ProbeResult.FAIL
        if not any(self.class_dir.iterdir()):
            self.detail = f"{self.class_dir} is empty"
            return ProbeResult.DEFER
        self.detail = f"reading {self.class_dir}"
        return ProbeResult.OK

    def read(self, now: float) -> list[DeviceReading]:
        try:
            entries = sorted(self.class_dir.iterdir(), key=lambda p: _natural(p.name))
        except OSError as exc:
            raise SourceError(f"cannot list {self.class_dir}: {exc}") from exc
        readings = []
        for entry in entries:
            reading = self._read_device(entry, now)
            if reading is not None:
                readings.append(reading)
        return readings

    def _read_device(self, hw: Path, now: float) -> DeviceReading | None:
        try:
            name = read_text(hw / "name")
        except OSError as exc:
            return DeviceReading(f"hwmon:?:{hw.name}", "other", self.name, now,
                                 error=f"cannot read {hw / 'name'}: {exc}")
        if not name:
            return None
        parent = link_name(hw / "device") or hw.name
        ident = f"hwmon:{name}:{parent}"
        pci = pci_parent(hw) if name in GPU_DRIVERS else None
        kind = hwmon_kind(name, _pci_kind(pci) if pci is not None else None)
        power_part_of = PACKAGE_ID if kind == "igpu" else None
        bus_id = pci.name if pci is not None else None
        try:
            temperature, temp_label = _temperature(hw, name)
            power = _power(hw)
            if power is None:
                power = self._energy_rate(ident, hw, now)
            limit = _scaled(hw / "power1_cap", 1e-6)
            if limit is None:
                limit = _scaled(hw / "power1_max", 1e-6)
            utilisation = memory_used = memory_total = None
            if pci is not None:
                busy = read_int(pci / "gpu_busy_percent")
                utilisation = float(busy) if busy is not None else None
                memory_used = read_int(pci / "mem_info_vram_used")
                memory_total = read_int(pci / "mem_info_vram_total")
            fan = _fan_percent(hw)
        except (OSError, ValueError) as exc:
            return DeviceReading(ident, kind, self.name, now, label=name, bus_id=bus_id,
                                 power_part_of=power_part_of, error=f"{type(exc).__name__}: {exc}")
        label = f"{name} {temp_label}" if temp_label else name
        return DeviceReading(
            device_id=ident, kind=kind, source=self.name, taken_at=now, label=label,
            power_w=power, power_limit_w=limit, temperature_c=temperature, fan_percent=fan,
            utilisation_percent=utilisation, memory_used_bytes=memory_used,
            memory_total_bytes=memory_total, bus_id=bus_id, power_part_of=power_part_of,
        )

    def _energy_rate(self, ident: str, hw: Path, now: float) -> float | None:
        energy = read_int(hw / "energy1_input")
        if energy is None:
            return None
        previous = self._energy.get(ident)
        if previous is not None and now <= previous[1]:
            return None  # same instant again: keep the older baseline
        self._energy[ident] = (energy, now)
        if previous is None or energy < previous[0]:
            return None  # first sight, or the counter was reset
        return (energy - previous[0]) * 1e-6 / (now - previous[1])


def _pci_kind(pci: Path) -> str:
    vendor = vendor_hex(read_text(pci / "vendor"))
    driver = link_name(pci / "driver")
    return gpu_kind(vendor, driver, pci.name, pci.parent.name)


def _temperature(hw: Path, name: str) -> tuple[float | None, str]:
    sensors: list[tuple[str, float]] = []
    for path in sorted(hw.glob("temp*_input"), key=lambda p: _natural(p.name)):
        value = read_int(path)
        if value is None:
            continue
        label = read_text(hw / path.name.replace("_input", "_label")) or ""
        sensors.append((label, value / 1000.0))
    if not sensors:
        return None, ""
    for wanted in TEMPERATURE_LABELS.get(name, ()):
        for label, value in sensors:
            if label.lower().startswith(wanted):
                return value, label
    label, value = max(sensors, key=lambda s: s[1])
    return value, label


def _power(hw: Path) -> float | None:
    for attr in ("power1_average", "power1_input"):
        value = _scaled(hw / attr, 1e-6)
        if value is not None:
            return value
    return None


def _fan_percent(hw: Path) -> float | None:
    pwm = read_int(hw / "pwm1")
    if pwm is not None:
        return pwm * 100.0 / 255.0
    rpm, rpm_max = read_int(hw / "fan1_input"), read_int(hw / "fan1_max")
    if rpm is not None and rpm_max:
        return min(100.0, rpm * 100.0 / rpm_max)
    return None


def _scaled(path: Path, factor: float) -> float | None:
    value = read_int(path)
    return value * factor if value is not None else None


def _natural(text: str) -> list:
    """Sort "hwmon10" after "hwmon9" and "temp10_input" after "temp9_input"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
