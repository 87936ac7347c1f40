"""The owner of what the router knows about the power source: AC or battery, level, state, warning level."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

# UPower's WarningLevel values (org.freedesktop.UPower.Device): none, discharging (UPS), low, critical, action.
WARNING_LEVELS = {0: "unknown", 1: "none", 2: "discharging", 3: "low", 4: "critical", 5: "action"}


@dataclass(frozen=True)
class PowerSourceState:
    on_battery: bool | None = None        # None: unknown (desktop without battery information)
    percent: float | None = None
    state: str = "unknown"                # charging | discharging | full | not-charging | empty | unknown
    warning_level: str = "unknown"
    source: str = "none"                  # "upower" | "sysfs" | "psutil" | "none"

    @property
    def kind(self) -> str:
        """"battery", "ac" or "unknown", as D-Bus `PowerSource` reports it."""
        if self.on_battery is None:
            return "unknown"
        return "battery" if self.on_battery else "ac"


class PowerSource:
    """Holds the current PowerSourceState; the preferred source (UPower) masks the fallback (sysfs)."""

    def __init__(self):
        self.current = PowerSourceState()
        self.upower_attached = False
        self._listeners: list[Callable[[PowerSourceState, PowerSourceState], None]] = []

    def add_listener(self, listener: Callable[[PowerSourceState, PowerSourceState], None]) -> None:
        self._listeners.append(listener)

    def update(self, new: PowerSourceState) -> bool:
        """Take a new reading; fallback readings are ignored while UPower is attached. True when it changed."""
        if self.upower_attached and new.source != "upower":
            return False
        old = self.current
        if new == old:
            return False
        self.current = new
        for listener in self._listeners:
            listener(old, new)
        return True

    def attach_upower(self, attached: bool) -> None:
        """UPower appeared (its readings take over) or vanished (fallback readings are taken again)."""
        self.upower_attached = attached
        if not attached and self.current.source == "upower":
            self.current = replace(self.current, source="none")
