"""Protective breakers: power budget, thermal, stale telemetry and manual pause, with hysteresis (pure).

Each breaker is a small state machine fed readings and a time; it answers whether it is open and
reports every transition once. Nothing here does I/O or logs: the service turns transitions into
log lines, scheduler wake-ups and D-Bus events.

| breaker | opens when | closes when | blocks |
|---|---|---|---|
| power budget | combined draw ≥ budget_watts | draw < resume_ratio × budget | new work on every backend |
| thermal (per device) | temperature ≥ pause_celsius | temperature ≤ resume_celsius | backends on that device |
| stale (per device with sensors) | no fresh reading for stale_seconds, or its source failed | a fresh reading | backends on that device |
| manual | pause (global or one backend) | resume | the paused scope |
| device removed | udev reports a backend's device gone (eGPU unplugged) | the device is back | that backend |

In-flight work always continues: breakers only stop new work from starting.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class ReasonCode(str, enum.Enum):
    POWER_BUDGET = "power-budget"
    THERMAL = "thermal"
    TELEMETRY_STALE = "telemetry-stale"
    PAUSED = "paused"
    DEVICE_REMOVED = "device-removed"


@dataclass(frozen=True)
class Transition:
    """One breaker opened or closed."""

    breaker: str            # "power" | "thermal" | "stale" | "manual"
    subject: str            # "global", a device id or a backend id
    opened: bool
    code: ReasonCode
    reason: str
    at: float


class _Breaker:
    """Open/closed with the reason it last opened for."""

    def __init__(self, breaker: str, subject: str, code: ReasonCode):
        self.breaker = breaker
        self.subject = subject
        self.code = code
        self.open = False
        self.reason = ""

    def _set(self, open_: bool, reason: str, now: float) -> Transition | None:
        if open_ == self.open:
            if open_:
                self.reason = reason
            return None
        self.open = open_
        self.reason = reason if open_ else ""
        return Transition(self.breaker, self.subject, open_, self.code, reason, now)


class PowerBudgetBreaker(_Breaker):
    def __init__(self, budget_watts: float, resume_ratio: float):
        super().__init__("power", "global", ReasonCode.POWER_BUDGET)
        self.budget = budget_watts
        self.resume_at = budget_watts * resume_ratio

    def update(self, total_watts: float | None, now: float) -> Transition | None:
        if total_watts is None:
            return None  # no power readings at all: the stale breakers speak for that
        if not self.open and total_watts >= self.budget:
            return self._set(True, f"combined draw {total_watts:.0f} W reached the {self.budget:.0f} W budget", now)
        if self.open and total_watts < self.resume_at:
            return self._set(False, f"combined draw {total_watts:.0f} W is below {self.resume_at:.0f} W", now)
        return None


class ThermalBreaker(_Breaker):
    def __init__(self, device_id: str, pause_celsius: float, resume_celsius: float):
        super().__init__("thermal", device_id, ReasonCode.THERMAL)
        self.pause = pause_celsius
        self.resume = resume_celsius

    def update(self, temperature_c: float | None, now: float) -> Transition | None:
        if temperature_c is None:
            return None
        if not self.open and temperature_c >= self.pause:
            return self._set(True, f"{self.subject} at {temperature_c:.0f} °C reached {self.pause:.0f} °C", now)
        if self.open and temperature_c <= self.resume:
            return self._set(False, f"{self.subject} cooled to {temperature_c:.0f} °C", now)
        return None


class StaleBreaker(_Breaker):
    def __init__(self, device_id: str, stale_seconds: float):
        super().__init__("stale", device_id, ReasonCode.TELEMETRY_STALE)
        self.stale_seconds = stale_seconds
        self.last_fresh: float | None = None

    def update(self, reading_at: float | None, error: str | None, now: float) -> Transition | None:
        """`reading_at`: when the device's latest good reading was taken (None: none this round)."""
        if reading_at is not None and error is None:
            self.last_fresh = reading_at if self.last_fresh is None else max(self.last_fresh, reading_at)
        age = None if self.last_fresh is None else now - self.last_fresh
        if age is not None and age <= self.stale_seconds:
            return self._set(False, "telemetry fresh again", now)
        if age is None and error is None:
            return None  # never read yet and nothing failed: not stale until the first deadline passes
        detail = f"source failed: {error}" if error else f"last reading {age:.1f}s old"
        return self._set(True, f"telemetry stale for {self.subject} ({detail})", now)

    def expire(self, now: float) -> Transition | None:
        """Open when no reading arrived within stale_seconds of `now` (a hung sampler counts as unsafe)."""
        if self.last_fresh is not None and now - self.last_fresh > self.stale_seconds:
            return self._set(True, f"telemetry stale for {self.subject} (last reading "
                                   f"{now - self.last_fresh:.1f}s old)", now)
        return None


class ManualBreaker(_Breaker):
    def __init__(self, subject: str):
        super().__init__("manual", subject, ReasonCode.PAUSED)

    def pause(self, reason: str, now: float) -> Transition | None:
        return self._set(True, reason or "paused by the user", now)

    def resume(self, now: float) -> Transition | None:
        return self._set(False, "resumed", now)


@dataclass(frozen=True)
class DeviceSample:
    """What the board needs of one device reading."""

    device_id: str
    taken_at: float | None
    temperature_c: float | None = None
    error: str | None = None


class BreakerBoard:
    """All breakers of one router; answers "may this backend take new work?" with a reason code."""

    def __init__(self, *, budget_watts: float | None, resume_ratio: float, pause_celsius: float,
                 resume_celsius: float, stale_seconds: float, backend_devices: Mapping[str, Iterable[str]]):
        self.power = PowerBudgetBreaker(budget_watts, resume_ratio) if budget_watts else None
        self.pause_celsius = pause_celsius
        self.resume_celsius = resume_celsius
        self.stale_seconds = stale_seconds
        self.backend_devices = {backend: tuple(devices) for backend, devices in backend_devices.items()}
        self.thermal: dict[str, ThermalBreaker] = {}
        self.stale: dict[str, StaleBreaker] = {}
        self.global_pause = ManualBreaker("global")
        self.backend_pause = {backend: ManualBreaker(backend) for backend in self.backend_devices}
        self.removed = {backend: _Breaker("device", backend, ReasonCode.DEVICE_REMOVED)
                        for backend in self.backend_devices}

    # ---- inputs ----------------------------------------------------------------------

    def expect(self, device_ids: Iterable[str], now: float) -> None:
        """Devices that must keep reporting (linked to backends): silent for stale_seconds from now → open."""
        for device_id in device_ids:
            if device_id not in self.stale:
                breaker = self.stale[device_id] = StaleBreaker(device_id, self.stale_seconds)
                breaker.last_fresh = now  # grace period from start

    def observe(self, total_watts: float | None, devices: Iterable[DeviceSample], now: float) -> list[Transition]:
        """Feed one telemetry snapshot; returns the transitions it caused."""
        transitions: list[Transition] = []
        if self.power is not None:
            transitions.append(self.power.update(total_watts, now))
        seen = set()
        for sample in devices:
            seen.add(sample.device_id)
            thermal = self.thermal.get(sample.device_id)
            if thermal is None:
                thermal = self.thermal[sample.device_id] = ThermalBreaker(
                    sample.device_id, self.pause_celsius, self.resume_celsius)
            transitions.append(thermal.update(sample.temperature_c, now))
            stale = self.stale.get(sample.device_id)
            if stale is None:
                stale = self.stale[sample.device_id] = StaleBreaker(sample.device_id, self.stale_seconds)
            transitions.append(stale.update(sample.taken_at, sample.error, now))
        for device_id, stale in self.stale.items():
            if device_id not in seen:
                transitions.append(stale.expire(now))
        return [t for t in transitions if t is not None]

    def tick(self, now: float) -> list[Transition]:
        """Without a new snapshot (sampler late or hung): open stale breakers whose data is too old."""
        return [t for t in (s.expire(now) for s in self.stale.values()) if t is not None]

    def pause(self, backend_id: str | None, reason: str, now: float) -> Transition | None:
        breaker = self.global_pause if backend_id is None else self.backend_pause[backend_id]
        return breaker.pause(reason, now)

    def resume(self, backend_id: str | None, now: float) -> Transition | None:
        breaker = self.global_pause if backend_id is None else self.backend_pause[backend_id]
        return breaker.resume(now)

    def device_removed(self, backend_id: str, device_id: str, now: float) -> Transition | None:
        return self.removed[backend_id]._set(True, f"device {device_id} was removed", now)

    def device_added(self, backend_id: str, device_id: str, now: float) -> Transition | None:
        return self.removed[backend_id]._set(False, f"device {device_id} is back", now)

    # ---- answers ---------------------------------------------------------------------

    def blocked(self, backend_id: str) -> tuple[ReasonCode, str] | None:
        """Why `backend_id` may not take new work now, or None when it may."""
        if self.global_pause.open:
            return ReasonCode.PAUSED, self.global_pause.reason
        paused = self.backend_pause.get(backend_id)
        if paused is not None and paused.open:
            return ReasonCode.PAUSED, paused.reason
        removed = self.removed.get(backend_id)
        if removed is not None and removed.open:
            return ReasonCode.DEVICE_REMOVED, removed.reason
        if self.power is not None and self.power.open:
            return ReasonCode.POWER_BUDGET, self.power.reason
        for device_id in self.backend_devices.get(backend_id, ()):
            thermal = self.thermal.get(device_id)
            if thermal is not None and thermal.open:
                return ReasonCode.THERMAL, thermal.reason
            stale = self.stale.get(device_id)
            if stale is not None and stale.open:
                return ReasonCode.TELEMETRY_STALE, stale.reason
        return None

    def open_breakers(self) -> list[_Breaker]:
        breakers: list[_Breaker] = [self.global_pause, *self.backend_pause.values(), *self.removed.values(),
                                    *self.thermal.values(), *self.stale.values()]
        if self.power is not None:
            breakers.append(self.power)
        return [b for b in breakers if b.open]

    def degraded_codes(self) -> list[str]:
        """Distinct reason codes of open breakers, in a stable order (for D-Bus `Degraded`)."""
        order = [ReasonCode.THERMAL, ReasonCode.POWER_BUDGET, ReasonCode.TELEMETRY_STALE, ReasonCode.PAUSED,
                 ReasonCode.DEVICE_REMOVED]
        open_codes = {b.code for b in self.open_breakers()}
        return [code.value for code in order if code in open_codes]
