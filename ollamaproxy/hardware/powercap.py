"""CPU package power from powercap RAPL `energy_uj` deltas (wrap-around via max_energy_range_uj), under a sysfs root.

Zones read (control type "intel-rapl", which AMD CPUs use too; "intel-rapl-mmio" duplicates the
package and is skipped):

- top-level `package-N` → "cpu:package" for package 0, "cpu:package:N" for the others, with the
  long-term (PL1) limit as power_limit_w;
- the `uncore` sub-zone → "igpu:uncore" (Intel client parts: the integrated GPU), whose power is
  part of its package's.

`psys` (whole platform, which would count everything twice), `core` and `dram` are not read.
Power is the counter's rate between two reads, so a zone's first read has no power yet. The
counter wraps at max_energy_range_uj; a counter that cannot be unwrapped (range unknown, or a
step larger than the range) gives None and a new baseline, never a guess.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .readings import DeviceReading
from .source import ProbeResult, SourceError
from .sysfs import read_int, read_text

ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class _Zone:
    path: Path
    device_id: str
    kind: str
    label: str
    part_of: str | None


def energy_delta(previous_uj: int, current_uj: int, max_range_uj: int | None) -> int | None:
    """Energy used between two counter values, unwrapping one wrap-around; None when unknowable."""
    if current_uj >= previous_uj:
        return current_uj - previous_uj
    if not max_range_uj or previous_uj > max_range_uj:
        return None
    return (max_range_uj - previous_uj) + current_uj


class PowercapSource:
    name = "rapl"
    category = "rapl"

    def __init__(self, sysfs_root: str | os.PathLike[str] = "/sys"):
        self.root = Path(sysfs_root)
        self.detail = ""
        self._last: dict[str, tuple[int, float]] = {}

    @property
    def class_dir(self) -> Path:
        return self.root / "class" / "powercap"

    def zones(self) -> list[_Zone]:
        """The zones this source reads, in a stable order."""
        found: list[tuple[tuple[int, int], _Zone]] = []
        for entry in self.class_dir.iterdir():
            match = ZONE.match(entry.name)
            if not match:
                continue
            package, sub = int(match.group(1)), match.group(2)
            name = read_text(entry / "name") or ""
            package_id = "cpu:package" if package == 0 else f"cpu:package:{package}"
            if sub is None and name.startswith("package-"):
                found.append(((package, -1), _Zone(entry, package_id, "cpu", f"RAPL {name}", None)))
            elif sub is not None and name == "uncore":
                ident = "igpu:uncore" if package == 0 else f"igpu:uncore:{package}"
                found.append(((package, int(sub)), _Zone(entry, ident, "igpu", "RAPL uncore (iGPU)", package_id)))
        return [zone for _, zone in sorted(found, key=lambda item: item[0])]

    def probe(self) -> ProbeResult:
        if not self.class_dir.is_dir():
            self.detail = f"{self.class_dir} does not exist"
            return ProbeResult.FAIL
        zones = self.zones()
        if not zones:
            self.detail = f"no RAPL package zone under {self.class_dir}"
            return ProbeResult.FAIL
        try:
            read_int(zones[0].path / "energy_uj")
        except PermissionError:
            self.detail = (f"{zones[0].path / 'energy_uj'} is not readable by this user "
                           "(root-only since Linux 5.10)")
            return ProbeResult.FAIL
        except OSError as exc:
            self.detail = f"cannot read {zones[0].path / 'energy_uj'}: {exc}"
            return ProbeResult.FAIL
        self.detail = f"{len(zones)} RAPL zone(s)"
        return ProbeResult.OK

    def read(self, now: float) -> list[DeviceReading]:
        try:
            zones = self.zones()
        except OSError as exc:
            raise SourceError(f"cannot list {self.class_dir}: {exc}") from exc
        return [self._read_zone(zone, now) for zone in zones]

    def _read_zone(self, zone: _Zone, now: float) -> DeviceReading:
        try:
            energy = read_int(zone.path / "energy_uj")
            if energy is None:
                raise FileNotFoundError(f"{zone.path / 'energy_uj'} is missing")
            limit = None
            if read_text(zone.path / "constraint_0_name") == "long_term":
                limit_uw = read_int(zone.path / "constraint_0_power_limit_uw")
                limit = limit_uw * 1e-6 if limit_uw is not None else None
            power = self._rate(zone, energy, now)
        except (OSError, ValueError) as exc:
            return DeviceReading(zone.device_id, zone.kind, self.name, now, label=zone.label,
                                 power_part_of=zone.part_of, error=f"{type(exc).__name__}: {exc}")
        return DeviceReading(zone.device_id, zone.kind, self.name, now, label=zone.label, power_w=power,
                             power_limit_w=limit, power_part_of=zone.part_of)

    def _rate(self, zone: _Zone, energy: int, now: float) -> float | None:
        previous = self._last.get(zone.device_id)
        if previous is not None and now <= previous[1]:
            return None  # no time has passed: keep the older baseline
        self._last[zone.device_id] = (energy, now)
        if previous is None:
            return None
        delta = energy_delta(previous[0], energy, read_int(zone.path / "max_energy_range_uj"))
        if delta is None:
            return None
        return delta * 1e-6 / (now - previous[1])
