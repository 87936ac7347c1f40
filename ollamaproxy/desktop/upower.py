"""Follows UPower on the system bus (OnBattery and the display device) by signal and feeds the router's PowerSource."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from ollamaproxy.power_source import WARNING_LEVELS, PowerSource, PowerSourceState

from . import contract
from .variants import plain

log = logging.getLogger("ollamaproxy.desktop.upower")

UPOWER = "org.freedesktop.UPower"
UPOWER_PATH = "/org/freedesktop/UPower"
DEVICE_INTERFACE = "org.freedesktop.UPower.Device"
DISPLAY_DEVICE = "/org/freedesktop/UPower/devices/DisplayDevice"
PROPERTIES = "org.freedesktop.DBus.Properties"

# What we use of UPower, as real upowerd exposes it. Built statically because introspection
# is not to be trusted here (python-dbusmock's leaves out PropertiesChanged).
UPOWER_XML = """<node>
 <interface name="org.freedesktop.DBus.Properties">
  <method name="Get"><arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="v" direction="out"/></method>
  <method name="GetAll"><arg type="s" direction="in"/><arg type="a{sv}" direction="out"/></method>
  <signal name="PropertiesChanged"><arg type="s"/><arg type="a{sv}"/><arg type="as"/></signal>
 </interface>
 <interface name="org.freedesktop.UPower">
  <method name="GetDisplayDevice"><arg type="o" direction="out"/></method>
  <property name="OnBattery" type="b" access="read"/>
 </interface>
 <interface name="org.freedesktop.UPower.Device">
  <property name="IsPresent" type="b" access="read"/>
  <property name="Percentage" type="d" access="read"/>
  <property name="State" type="u" access="read"/>
  <property name="WarningLevel" type="u" access="read"/>
 </interface>
</node>"""

# org.freedesktop.UPower.Device State -> PowerSourceState.state
DEVICE_STATES = {0: "unknown", 1: "charging", 2: "discharging", 3: "empty", 4: "full", 5: "not-charging",
                 6: "discharging"}


def power_state(values: dict[str, Any]) -> PowerSourceState:
    """PowerSourceState from UPower's OnBattery and the display device's properties (plain values)."""
    present = bool(values.get("IsPresent", False))
    percent = values.get("Percentage")
    return PowerSourceState(
        on_battery=bool(values.get("OnBattery", False)),
        percent=float(percent) if present and percent is not None else None,
        state=DEVICE_STATES.get(int(values.get("State", 0)), "unknown") if present else "unknown",
        warning_level=WARNING_LEVELS.get(int(values.get("WarningLevel", 0)), "unknown"),
        source="upower",
    )


class UPowerFollower:
    """Keeps `power_source` in step with UPower; while UPower is absent, the fallback (sysfs) readings count."""

    def __init__(self, power_source: PowerSource, *, bus_address: str | None = None):
        self.power_source = power_source
        self.bus_address = bus_address
        self.bus: MessageBus | None = None
        self.attached = False
        self._values: dict[str, Any] = {}
        self._handlers: list[tuple[Any, Any]] = []
        self._generation = 0
        self._absence_logged = False
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Connect to the system bus, follow UPower if it is there and watch it come and go; never raises."""
        try:
            self.bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
            self.bus.add_message_handler(self._on_message)
            await self._dbus("AddMatch", contract.name_owner_rule(UPOWER))
            has_owner = await self._dbus("NameHasOwner", UPOWER)
        except Exception as error:  # noqa: BLE001 - no system bus is a normal desktop-less setup
            self._absent(f"cannot reach the system bus: {error}")
            await self.stop()
            return
        if has_owner:
            await self._attach()
        else:
            self._absent("UPower is not running")

    async def stop(self) -> None:
        self._generation += 1
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._drop_handlers()
        bus, self.bus = self.bus, None
        if bus is not None:
            bus.remove_message_handler(self._on_message)
            bus.disconnect()
        if self.attached:
            self.attached = False
            self.power_source.attach_upower(False)

    async def _dbus(self, member: str, *args: str) -> Any:
        reply = await self.bus.call(Message(destination=contract.DBUS_NAME, path=contract.DBUS_PATH,
                                            interface=contract.DBUS_INTERFACE, member=member,
                                            signature="s" * len(args), body=list(args)))
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"{member} failed: {reply.error_name}: {plain(reply.body)}")
        return reply.body[0] if reply.body else None

    # ---- UPower coming and going -----------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                and msg.sender == contract.DBUS_NAME and msg.body and msg.body[0] == UPOWER):
            _name, old, new = msg.body
            if old:
                self._detach("UPower went away")
            if new:
                task = asyncio.get_running_loop().create_task(self._attach())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return None

    async def _attach(self) -> None:
        self._generation += 1
        generation = self._generation
        self._drop_handlers()
        bus = self.bus
        try:
            root = bus.get_proxy_object(UPOWER, UPOWER_PATH, UPOWER_XML)
            display = bus.get_proxy_object(UPOWER, DISPLAY_DEVICE, UPOWER_XML)
            for proxy in (root, display):
                props = proxy.get_interface(PROPERTIES)
                props.on_properties_changed(self._properties_changed)
                self._handlers.append((props, self._properties_changed))
            values = plain(await root.get_interface(PROPERTIES).call_get_all(UPOWER))
            values.update(plain(await display.get_interface(PROPERTIES).call_get_all(DEVICE_INTERFACE)))
        except Exception as error:  # noqa: BLE001 - a half-started UPower: wait for it to come back
            if generation == self._generation:
                self._drop_handlers()
                self._absent(f"UPower did not answer: {error}")
            return
        if generation != self._generation:
            return  # it went away (or came back again) while we were asking
        self._values = {key: values[key] for key in ("OnBattery", "IsPresent", "Percentage", "State", "WarningLevel")
                        if key in values}
        if not self.attached:
            log.info("following UPower for the power source")
        self.attached = True
        self.power_source.attach_upower(True)
        self.power_source.update(power_state(self._values))

    def _detach(self, reason: str) -> None:
        self._generation += 1
        self._drop_handlers()
        if self.attached:
            self.attached = False
            self.power_source.attach_upower(False)
        self._absent(reason)

    def _absent(self, reason: str) -> None:
        self.power_source.attach_upower(False)
        if not self._absence_logged:  # warn once; a restarting UPower is worth an info line, not a warning each time
            self._absence_logged = True
            log.warning("%s: using the sysfs battery readings until UPower appears", reason)
        else:
            log.info("%s: using the sysfs battery readings until UPower is back", reason)

    def _drop_handlers(self) -> None:
        for props, handler in self._handlers:
            try:
                props.off_properties_changed(handler)
            except Exception:  # noqa: BLE001 - the bus may already be gone
                pass
        self._handlers.clear()

    # ---- property changes ------------------------------------------------------------

    def _properties_changed(self, interface: str, changed: dict, _invalidated: list) -> None:
        if not self.attached or interface not in (UPOWER, DEVICE_INTERFACE):
            return
        wanted = ("OnBattery",) if interface == UPOWER else ("IsPresent", "Percentage", "State", "WarningLevel")
        updates = {key: plain(value) for key, value in changed.items() if key in wanted}
        if not updates:
            return
        self._values.update(updates)
        try:
            self.power_source.update(power_state(self._values))
        except Exception:  # noqa: BLE001 - a listener failed; the next change tries again
            log.exception("applying a UPower change failed")
