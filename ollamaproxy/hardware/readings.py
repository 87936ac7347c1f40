"""Immutable telemetry values: one device reading, the battery, and a timestamped snapshot of both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEVICE_KINDS = ("nvidia", "igpu", "dgpu", "cpu", "npu", "nvme", "other")
BATTERY_STATES = ("charging", "discharging", "full", "not-charging", "unknown")


@dataclass(frozen=True)
class DeviceReading:
    """What one source measured on one device at `taken_at` (monotonic seconds).

    A value the hardware does not report is None. When the source failed for this device this
    time, `error` says why and every value field is None: a reading never carries a default.
    `bus_id` is the PCI address ("0000:01:00.0") when the device sits on PCI; it links a reading
    to discovered (pyudev) devices. `power_part_of` names the device whose power already includes
    this one's (the iGPU inside the CPU package), so totals do not count it twice.
    """

    device_id: str
    kind: str
    source: str
    taken_at: float
    label: str = ""
    power_w: float | None = None
    power_limit_w: float | None = None
    temperature_c: float | None = None
    fan_percent: float | None = None
    utilisation_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    throttle_reasons: tuple[str, ...] = ()
    throttling: bool = False
    error: str | None = None
    bus_id: str | None = None
    power_part_of: str | None = None

    def age(self, now: float) -> float:
        """Seconds since this reading was taken, on the same clock as `now`."""
        return now - self.taken_at


@dataclass(frozen=True)
class BatteryReading:
    """The machine's power source and battery, combined over all system batteries.

    `present` is False on a machine without a system battery (peripheral batteries do not
    count); then `on_battery` is False. `on_battery` is None only when it cannot be told.
    """

    present: bool
    on_battery: bool | None
    percent: float | None
    state: str
    source: str
    taken_at: float

    def age(self, now: float) -> float:
        return now - self.taken_at


Reading = DeviceReading | BatteryReading


@dataclass(frozen=True)
class Snapshot:
    """Everything one sampling round saw; sources that failed or hung are in `source_errors`."""

    taken_at: float
    devices: Mapping[str, DeviceReading] = field(default_factory=dict)
    battery: BatteryReading | None = None
    source_errors: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", MappingProxyType(dict(self.devices)))
        object.__setattr__(self, "source_errors", MappingProxyType(dict(self.source_errors)))

    def total_power_w(self) -> float | None:
        """Sum of the power that is known, each watt once; None when no device reports power.

        A reading whose `power_part_of` names a device that reports power here is left out
        (it is already inside that device's figure).
        """
        known = {d.device_id: d.power_w for d in self.devices.values() if d.power_w is not None}
        if not known:
            return None
        total = 0.0
        for device_id, watts in known.items():
            parent = self.devices[device_id].power_part_of
            if parent is not None and parent in known:
                continue
            total += watts
        return total

    def hottest(self) -> DeviceReading | None:
        """The reading with the highest known temperature, or None when none is known."""
        warm = [d for d in self.devices.values() if d.temperature_c is not None]
        if not warm:
            return None
        return max(warm, key=lambda d: (d.temperature_c, d.device_id))

    def age(self, now: float) -> float:
        return now - self.taken_at
