"""Control: the one API through which D-Bus, the management HTTP API and the CLI read and steer a router.

Everything here reads the owners' state (registry, scheduler, safety, efficiency policy, power
source) or asks an owner to change it; nothing keeps state of its own except the change feed.
Each getter builds exactly what one D-Bus property or management endpoint returns, so Get, the
management API and `PropertiesChanged` can never disagree.

Change feed topics (`add_listener(callback(topic, detail))`):
- "efficiency"   mode, effective mode, holds or degraded reason may have changed
- "mode-changed" detail {"old", "new", "reason"}: the effective mode changed
- "backends"     a backend's health, enabled flag, load or breaker changed; detail {"id"}
- "routing"      queue depth, in-flight, totals or pause changed
- "thermal"      device readings or thermal breakers changed; detail {"event": "warning"|"throttling-started"|...}
- "system"       power source, battery, power draw or budget breaker changed
- "breaker"      detail: the Transition (for notifications)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ollamaproxy.backends.health import Health
from ollamaproxy.modes import MODE_SPECS, Mode, mode_info
from ollamaproxy.policy.breakers import ReasonCode

if TYPE_CHECKING:
    from ollamaproxy.service import Router

Listener = Callable[[str, dict], None]


class Control:
    def __init__(self, router: "Router"):
        self.router = router
        self._listeners: list[Listener] = []

    # ---- change feed -----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, topic: str, detail: dict | None = None) -> None:
        for listener in list(self._listeners):
            listener(topic, detail or {})

    # ---- efficiency ------------------------------------------------------------------

    @staticmethod
    def modes() -> list[dict[str, str]]:
        return [mode_info(mode) for mode in MODE_SPECS]

    @staticmethod
    def mode_info(mode: str) -> dict[str, str]:
        return mode_info(mode)

    def mode(self) -> str:
        return self.router.efficiency.user_mode.value

    def effective_mode(self) -> str:
        return self.router.efficiency.current.mode.value

    def effective_reason(self) -> str:
        current = self.router.efficiency.current
        return f"{current.rule}: {current.reason}"

    def set_mode(self, mode: str, reason: str = "user") -> None:
        """Set the user's mode (InvalidModeError lists valid ids); persisted by the service."""
        self.router.set_mode(mode, reason)

    def hold(self, mode: str, reason: str, app_id: str, owner: str) -> int:
        return self.router.efficiency.hold(mode, reason, app_id, owner)

    def release(self, cookie: int, owner: str | None) -> None:
        self.router.efficiency.release(cookie, owner)

    def release_owner(self, owner: str) -> int:
        return len(self.router.efficiency.release_owner(owner))

    def holds(self) -> list[dict[str, Any]]:
        return [{"cookie": h.cookie, "mode": h.mode.value, "reason": h.reason, "app_id": h.app_id}
                for h in self.router.efficiency.holds.values()]

    def degraded(self) -> str:
        """Comma-joined reason codes, "" when all is well (power-profiles-daemon's PerformanceDegraded)."""
        router = self.router
        codes = list(router.safety.board.degraded_codes())
        now = router.registry.clock()
        if not any(s.available(now) for s in router.registry.states.values()):
            codes.append("no-backends")
        if router.power_source.current.on_battery:
            codes.append("on-battery")
        return ",".join(codes)

    def auto_reasoning(self) -> str:
        return self.router.efficiency.auto_reasoning()

    # ---- backends --------------------------------------------------------------------

    def backend_ids(self) -> list[str]:
        return list(self.router.registry.states)

    def backend(self, backend_id: str) -> dict[str, Any]:
        router = self.router
        state = router.registry.states[backend_id]
        now = router.registry.clock()
        power, temperature = router.safety.backend_live(backend_id)
        blocked = router.safety.blocked(backend_id)
        inventory = state.inventory
        health = state.health.value if state.enabled else "disabled"
        if state.enabled and now < state.busy_until:
            health = Health.BUSY.value
        return {
            "id": backend_id,
            "kind": state.config.kind,
            "hardware": state.config.hardware,
            "url": state.config.url,
            "health": health,
            "health_reason": state.reason,
            "enabled": state.enabled,
            "in_flight": router.scheduler.in_flight[backend_id],
            "capacity": router.scheduler.capacity[backend_id],
            "queued": router.scheduler.queued_for(backend_id),
            "models": sorted(inventory.models) if inventory else [],
            "loaded_models": sorted(inventory.loaded) if inventory else [],
            "power_watts": power if power is not None else -1.0,
            "temperature_celsius": temperature if temperature is not None else -1.0,
            "breaker": blocked[0].value if blocked else "",
            "breaker_reason": blocked[1] if blocked else "",
        }

    def backends(self) -> list[dict[str, Any]]:
        return [self.backend(backend_id) for backend_id in self.router.registry.states]

    def set_backend_enabled(self, backend_id: str, enabled: bool) -> None:
        """Enable or disable a backend (KeyError when unknown); waiting requests move at once."""
        self.router.registry.set_enabled(backend_id, enabled)

    # ---- routing ---------------------------------------------------------------------

    def routing(self) -> dict[str, Any]:
        router = self.router
        return {
            "queue_depth": router.scheduler.queue_depth,
            "in_flight": sum(router.scheduler.in_flight.values()),
            "total_requests": router.state.total_requests,
            "paused": router.safety.paused,
        }

    def pause(self, backend_id: str | None = None, reason: str = "") -> None:
        self.router.safety.pause(backend_id, reason)

    def resume(self, backend_id: str | None = None) -> None:
        self.router.safety.resume(backend_id)

    def recent_decisions(self, limit: int = 20) -> list[dict[str, Any]]:
        decisions = list(self.router.state.decisions)
        return decisions[-limit:][::-1] if limit > 0 else []

    def reload(self) -> tuple[bool, str]:
        """Re-read the config file: (applied, what happened); a bad file keeps the running config."""
        from ollamaproxy.config import ConfigError
        from ollamaproxy.desktop.dbus_service import reload_summary

        reloader = self.router.reloader
        if reloader is None:
            return False, "this router was not started from a config file (serve --config): nothing to reload"
        try:
            return reload_summary(reloader.reload())
        except ConfigError:
            return reload_summary(reloader.last)

    def simulate(self, description: dict) -> dict[str, Any]:
        """The routing decision for a described request; changes nothing."""
        return self.router.explain(description)

    # ---- thermal and system ----------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        router = self.router
        snapshot = router.safety.latest
        if snapshot is None:
            return []
        board = router.safety.board
        rows = []
        for reading in snapshot.devices.values():
            thermal = board.thermal.get(reading.device_id)
            stale = board.stale.get(reading.device_id)
            breaker = ""
            if thermal is not None and thermal.open:
                breaker = ReasonCode.THERMAL.value
            elif stale is not None and stale.open:
                breaker = ReasonCode.TELEMETRY_STALE.value
            rows.append({
                "id": reading.device_id,
                "kind": reading.kind,
                "label": reading.label or reading.device_id,
                "source": reading.source,
                "temperature_celsius": _or_minus(reading.temperature_c),
                "fan_percent": _or_minus(reading.fan_percent),
                "power_watts": _or_minus(reading.power_w),
                "throttling": reading.throttling,
                "throttle_reasons": list(reading.throttle_reasons),
                "breaker": breaker,
                "error": reading.error or "",
            })
        return rows

    def hottest(self) -> tuple[str, float]:
        snapshot = self.router.safety.latest
        reading = snapshot.hottest() if snapshot is not None else None
        if reading is None or reading.temperature_c is None:
            return "", -1.0
        return reading.label or reading.device_id, reading.temperature_c

    def system(self) -> dict[str, Any]:
        router = self.router
        power = router.power_source.current
        snapshot = router.safety.latest
        total = snapshot.total_power_w() if snapshot is not None else None
        breaker = router.safety.board.power
        return {
            "on_battery": bool(power.on_battery),
            "battery_percent": power.percent if power.percent is not None else -1.0,
            "power_source": power.kind,
            "battery_state": power.state,
            "warning_level": power.warning_level,
            "total_power_watts": total if total is not None else -1.0,
            "power_budget_watts": router.config.power.budget_watts or 0.0,
            "power_breaker_open": bool(breaker is not None and breaker.open),
        }


def _or_minus(value: float | None) -> float:
    """D-Bus has no null: unknown numbers travel as -1."""
    return -1.0 if value is None else float(value)


__all__ = ["Control", "Mode"]
