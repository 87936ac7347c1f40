"""The owner of the user's mode choice and of the effective mode in force (Auto resolved)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ollamaproxy.modes import AutoDecision, AutoInputs, Mode, parse_mode, resolve_auto


@dataclass(frozen=True)
class EffectiveMode:
    mode: Mode            # never AUTO
    rule: str             # "manual" or the Auto rule id that decided
    reason: str


@dataclass(frozen=True)
class ModeChange:
    old: Mode
    new: Mode
    reason: str


def default_auto_inputs(quiet_hours: tuple[int, int] | None,
                        wall_clock: Callable[[], float] = time.time) -> Callable[[], AutoInputs]:
    """Auto inputs before telemetry and UPower feed real ones: power source unknown, thermal normal."""

    def inputs() -> AutoInputs:
        hour = time.localtime(wall_clock()).tm_hour
        return AutoInputs(on_battery=None, battery_percent=None, thermal="normal", hour=hour,
                          quiet_hours=quiet_hours)

    return inputs


class EfficiencyPolicy:
    """Holds `user_mode` (what the user chose) and resolves the effective mode for each decision.

    A change of the user's mode applies to the next scheduling decision. Listeners hear about
    user-mode changes as `ModeChange(old, new, reason)`.
    """

    def __init__(self, default_mode: Mode | str, *, auto_inputs: Callable[[], AutoInputs],
                 battery_hysteresis_percent: float = 5.0):
        self.user_mode = parse_mode(default_mode) if isinstance(default_mode, str) else default_mode
        self.auto_inputs = auto_inputs
        self.hysteresis = battery_hysteresis_percent
        self._last_auto: AutoDecision | None = None
        self._listeners: list[Callable[[ModeChange], None]] = []

    def add_listener(self, listener: Callable[[ModeChange], None]) -> None:
        self._listeners.append(listener)

    def set_mode(self, mode: Mode | str, reason: str = "user") -> ModeChange | None:
        """Set the user's mode (accepts aliases; raises InvalidModeError). None when unchanged."""
        new = parse_mode(mode) if isinstance(mode, str) else mode
        old = self.user_mode
        if new is old:
            return None
        self.user_mode = new
        change = ModeChange(old, new, reason)
        for listener in self._listeners:
            listener(change)
        return change

    def effective(self) -> EffectiveMode:
        """The mode in force now: the user's choice, or what Auto resolves to from current inputs."""
        if self.user_mode is not Mode.AUTO:
            return EffectiveMode(self.user_mode, "manual", f"chosen mode {self.user_mode.value}")
        decision = resolve_auto(self.auto_inputs(), self._last_auto, hysteresis_percent=self.hysteresis)
        self._last_auto = decision
        return EffectiveMode(decision.mode, f"auto:{decision.rule}", decision.reason)
