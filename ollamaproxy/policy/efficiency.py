"""The owner of the user's mode choice, mode holds, and the effective mode in force (Auto resolved).

Like power-profiles-daemon's selected/active profile: `user_mode` is what the user chose (and
what is persisted); `current` is what routing uses. Holds (an application asking for a mode
while it runs) override the user's mode, the most efficient hold winning; a manual mode change
releases every hold. With `auto`, the effective mode follows `resolve_auto` over the inputs the
desktop and telemetry provide, and changes only when `refresh()` sees a different answer: on
edges (plug, unplug, a battery threshold, a thermal breaker, quiet hours starting), never by
overriding a manual choice.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

from ollamaproxy.modes import AutoDecision, AutoInputs, InvalidModeError, Mode, efficiency_rank, parse_mode, resolve_auto


@dataclass(frozen=True)
class EffectiveMode:
    mode: Mode            # never AUTO
    rule: str             # "manual", "hold:<app_id>" or "auto:<rule id>"
    reason: str


@dataclass(frozen=True)
class Hold:
    cookie: int
    mode: Mode
    reason: str
    app_id: str
    owner: str            # who may release it (a D-Bus unique name, or "" for internal holds)


@dataclass(frozen=True)
class PolicyEvent:
    """What changed: kind "mode" (user's choice), "effective" (mode in force) or "holds"."""

    kind: str
    old: str
    new: str
    reason: str


def default_auto_inputs(quiet_hours: tuple[int, int] | None,
                        wall_clock: Callable[[], float] = time.time) -> Callable[[], AutoInputs]:
    """Auto inputs with nothing known but the time of day: power source unknown, thermal normal."""

    def inputs() -> AutoInputs:
        hour = time.localtime(wall_clock()).tm_hour
        return AutoInputs(on_battery=None, battery_percent=None, thermal="normal", hour=hour,
                          quiet_hours=quiet_hours)

    return inputs


class EfficiencyPolicy:
    def __init__(self, default_mode: Mode | str, *, auto_inputs: Callable[[], AutoInputs],
                 battery_hysteresis_percent: float = 5.0):
        self.user_mode = parse_mode(default_mode) if isinstance(default_mode, str) else default_mode
        self.auto_inputs = auto_inputs
        self.hysteresis = battery_hysteresis_percent
        self.holds: dict[int, Hold] = {}
        self._cookies = itertools.count(1)
        self._last_auto: AutoDecision | None = None
        self._listeners: list[Callable[[PolicyEvent], None]] = []
        self.current = self._resolve()

    def add_listener(self, listener: Callable[[PolicyEvent], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, event: PolicyEvent) -> None:
        for listener in self._listeners:
            listener(event)

    # ---- resolution ------------------------------------------------------------------

    def _resolve(self) -> EffectiveMode:
        if self.holds:
            winner = max(self.holds.values(), key=lambda h: (efficiency_rank(h.mode), -h.cookie))
            return EffectiveMode(winner.mode, f"hold:{winner.app_id}",
                                 f"held by {winner.app_id}: {winner.reason}" if winner.reason else f"held by {winner.app_id}")
        if self.user_mode is not Mode.AUTO:
            return EffectiveMode(self.user_mode, "manual", f"chosen mode {self.user_mode.value}")
        decision = resolve_auto(self.auto_inputs(), self._last_auto, hysteresis_percent=self.hysteresis)
        self._last_auto = decision
        return EffectiveMode(decision.mode, f"auto:{decision.rule}", decision.reason)

    def refresh(self, reason: str = "inputs-changed") -> EffectiveMode:
        """Re-resolve the effective mode (after any input changed); announce it when it differs."""
        old = self.current
        new = self._resolve()
        self.current = new
        if new.mode is not old.mode:
            self._emit(PolicyEvent("effective", old.mode.value, new.mode.value,
                                   reason if reason != "inputs-changed" else new.rule))
        return new

    def effective(self) -> EffectiveMode:
        """The mode in force now (what routing uses)."""
        return self.current

    def auto_reasoning(self) -> str:
        """Why Auto resolves the way it does right now (without changing anything)."""
        decision = resolve_auto(self.auto_inputs(), self._last_auto, hysteresis_percent=self.hysteresis)
        prefix = "" if self.user_mode is Mode.AUTO and not self.holds else "(auto is not in force) "
        return f"{prefix}{decision.mode.value} by rule {decision.rule}: {decision.reason}"

    # ---- user actions ----------------------------------------------------------------

    def set_mode(self, mode: Mode | str, reason: str = "user") -> PolicyEvent | None:
        """Set the user's mode (aliases accepted; InvalidModeError lists the valid ids); releases holds."""
        new = parse_mode(mode) if isinstance(mode, str) else mode
        old = self.user_mode
        released = bool(self.holds)
        self.holds.clear()
        if released:
            self._emit(PolicyEvent("holds", "", "", "manual mode change releases holds"))
        self.user_mode = new
        event = None
        if new is not old:
            event = PolicyEvent("mode", old.value, new.value, reason)
            self._emit(event)
        self.refresh(reason)
        return event

    def hold(self, mode: Mode | str, reason: str, app_id: str, owner: str = "") -> int:
        """Hold a mode while the caller runs; returns a cookie for `release`."""
        held = parse_mode(mode) if isinstance(mode, str) else mode
        if held is Mode.AUTO:
            raise InvalidModeError("auto (a hold needs a concrete mode)")
        cookie = next(self._cookies)
        self.holds[cookie] = Hold(cookie, held, reason, app_id, owner)
        self._emit(PolicyEvent("holds", "", str(cookie), f"hold by {app_id}"))
        self.refresh(f"hold by {app_id}")
        return cookie

    def release(self, cookie: int, owner: str | None = None) -> Hold:
        """Release one hold; with `owner`, only that owner's hold (KeyError/PermissionError otherwise)."""
        hold = self.holds.get(cookie)
        if hold is None:
            raise KeyError(cookie)
        if owner is not None and hold.owner != owner:
            raise PermissionError(f"hold {cookie} belongs to another caller")
        del self.holds[cookie]
        self._emit(PolicyEvent("holds", str(cookie), "", f"released by {hold.app_id}"))
        self.refresh(f"hold by {hold.app_id} released")
        return hold

    def release_owner(self, owner: str) -> list[Hold]:
        """Drop every hold of a caller that went away (its bus connection closed)."""
        gone = [h for h in self.holds.values() if h.owner == owner]
        for hold in gone:
            del self.holds[hold.cookie]
        if gone:
            self._emit(PolicyEvent("holds", "", "", f"holder {owner} vanished"))
            self.refresh(f"holder {owner} vanished")
        return gone
