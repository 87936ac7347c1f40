"""NPUs as DRM `accel` devices under a sysfs root: presence, driver and, where exposed, busy time as load."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .classify import NPU_DRIVERS
from .readings import DeviceReading
from .source import ProbeResult, SourceError
from .sysfs import link_name, pci_parent, read_int

ACCEL = re.compile(r"^accel\d+$")


def npu_id(bus_id: str | None, accel_name: str) -> str:
    """"npu:<PCI address>" (stable) or "npu:<accelN>" when the NPU is not on PCI."""
    return f"npu:{bus_id or accel_name}"


class AccelSource:
    """One reading per accel device; utilisation from `npu_busy_time_us` (intel_vpu) between reads.

    NPUs have no power or temperature sensors of their own; the reading still says the device is
    there and answering, which is what the stale-telemetry breaker needs of a linked device.
    """

    name = "accel"
    category = "accel"

    def __init__(self, sysfs_root: str | os.PathLike[str] = "/sys"):
        self.root = Path(sysfs_root)
        self.detail = ""
        self._busy: dict[str, tuple[int, float]] = {}

    @property
    def class_dir(self) -> Path:
        return self.root / "class" / "accel"

    def probe(self) -> ProbeResult:
        if not self.class_dir.is_dir():
            self.detail = f"{self.class_dir} does not exist"
            return ProbeResult.FAIL
        if not any(ACCEL.match(p.name) for p in self.class_dir.iterdir()):
            self.detail = f"no accel device under {self.class_dir} (yet)"
            return ProbeResult.DEFER
        self.detail = f"reading {self.class_dir}"
        return ProbeResult.OK

    def read(self, now: float) -> list[DeviceReading]:
        try:
            entries = sorted(p for p in self.class_dir.iterdir() if ACCEL.match(p.name))
        except OSError as exc:
            raise SourceError(f"cannot list {self.class_dir}: {exc}") from exc
        return [self._read_one(entry, now) for entry in entries]

    def _read_one(self, entry: Path, now: float) -> DeviceReading:
        pci = pci_parent(entry)
        bus_id = pci.name if pci is not None else None
        ident = npu_id(bus_id, entry.name)
        driver = link_name(entry / "device" / "driver") or "unknown"
        kind = "npu" if driver in NPU_DRIVERS else "other"
        try:
            busy = read_int(entry / "device" / "npu_busy_time_us")
        except (OSError, ValueError) as exc:
            return DeviceReading(ident, kind, "sysfs", now, label=driver, bus_id=bus_id,
                                 error=f"{type(exc).__name__}: {exc}")
        return DeviceReading(ident, kind, "sysfs", now, label=driver, bus_id=bus_id,
                             utilisation_percent=self._rate(ident, busy, now))

    def _rate(self, ident: str, busy_us: int | None, now: float) -> float | None:
        if busy_us is None:
            return None
        previous = self._busy.get(ident)
        if previous is not None and now <= previous[1]:
            return None
        self._busy[ident] = (busy_us, now)
        if previous is None or busy_us < previous[0]:
            return None
        return min(100.0, (busy_us - previous[0]) * 1e-6 * 100.0 / (now - previous[1]))
