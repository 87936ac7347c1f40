"""Battery charge and power source from `power_supply` under a sysfs root, combined over system batteries.

Rules:
- Batteries are supplies of type "Battery" whose `scope` is not "Device" (a mouse or headset
  battery is not the machine's). Several batteries combine: percent from summed energy (or
  charge) now/full when every battery has it, else the mean of `capacity`; state "discharging"
  if any discharges, else "charging" if any charges, else "full" if all are full, else
  "not-charging" if any says so, else "unknown".
- on_battery: False when any "Mains"/"USB"/"USB_C" supply is online; True when such supplies
  exist and all are offline; with no such supply, from the battery state (discharging → True,
  charging/full → False, else None). A machine with no system battery is not on battery.
"""

from __future__ import annotations

import os
from pathlib import Path

from .readings import BatteryReading
from .source import ProbeResult, SourceError
from .sysfs import read_int, read_text

LINE_TYPES = frozenset({"Mains", "USB", "USB_C", "USB_PD", "USB_PD_DRP"})
STATES = {"Charging": "charging", "Discharging": "discharging", "Full": "full",
          "Not charging": "not-charging"}


def combine_state(states: list[str]) -> str:
    if "discharging" in states:
        return "discharging"
    if "charging" in states:
        return "charging"
    if states and all(s == "full" for s in states):
        return "full"
    if "not-charging" in states:
        return "not-charging"
    return "unknown"


class BatterySource:
    name = "battery"
    category = "battery"

    def __init__(self, sysfs_root: str | os.PathLike[str] = "/sys"):
        self.root = Path(sysfs_root)
        self.detail = ""

    @property
    def class_dir(self) -> Path:
        return self.root / "class" / "power_supply"

    def probe(self) -> ProbeResult:
        if not self.class_dir.is_dir():
            self.detail = f"{self.class_dir} does not exist"
            return ProbeResult.FAIL
        self.detail = f"reading {self.class_dir}"
        return ProbeResult.OK

    def read(self, now: float) -> list[BatteryReading]:
        try:
            supplies = sorted(self.class_dir.iterdir())
        except OSError as exc:
            raise SourceError(f"cannot list {self.class_dir}: {exc}") from exc
        try:
            return [self._combine(supplies, now)]
        except (OSError, ValueError) as exc:
            raise SourceError(f"power_supply: {type(exc).__name__}: {exc}") from exc

    def _combine(self, supplies: list[Path], now: float) -> BatteryReading:
        batteries: list[Path] = []
        lines_online: list[bool] = []
        for supply in supplies:
            kind = read_text(supply / "type")
            if kind == "Battery" and read_text(supply / "scope") != "Device":
                if read_int(supply / "present") == 0:
                    continue
                batteries.append(supply)
            elif kind in LINE_TYPES:
                online = read_int(supply / "online")
                if online is not None:
                    lines_online.append(online == 1)
        states = [STATES.get(read_text(b / "status") or "", "unknown") for b in batteries]
        state = combine_state(states)
        if not batteries:
            return BatteryReading(False, False, None, "unknown", "sysfs", now)
        if lines_online:
            on_battery: bool | None = not any(lines_online)
        elif state == "discharging":
            on_battery = True
        elif state in ("charging", "full"):
            on_battery = False
        else:
            on_battery = None
        return BatteryReading(True, on_battery, _percent(batteries), state, "sysfs", now)


def _percent(batteries: list[Path]) -> float | None:
    for now_attr, full_attr in (("energy_now", "energy_full"), ("charge_now", "charge_full")):
        pairs = [(read_int(b / now_attr), read_int(b / full_attr)) for b in batteries]
        if all(n is not None and f for n, f in pairs):
            total_full = sum(f for _, f in pairs)
            return min(100.0, 100.0 * sum(n for n, _ in pairs) / total_full)
    capacities = [read_int(b / "capacity") for b in batteries]
    known = [c for c in capacities if c is not None]
    if len(known) != len(capacities) or not known:
        return None
    return float(sum(known)) / len(known)
