"""The ie.fio.OllamaProxy D-Bus service: one dbus-fast ServiceInterface per interface, thin over the Control facade."""

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from dbus_fast import ErrorType, Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusDouble, DBusSignature, DBusStr, DBusUInt32, DBusUInt64
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_property, method, signal

from ollamaproxy.control import Control
from ollamaproxy.modes import InvalidModeError
from ollamaproxy.proxy.errors import ApiError

from . import contract
from .variants import plain, vardict, vardicts

log = logging.getLogger("ollamaproxy.desktop")

READ = PropertyAccess.READ
VarDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
VarDicts = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
COALESCE_SECONDS = 0.25
_UNSET = object()


class CallContext:
    """The unique bus name of the caller whose method call is being dispatched right now.

    dbus-fast does not hand the message to method handlers; a message handler registered before
    dispatch notes the sender, and synchronous methods read it in the same dispatch step.
    """

    def __init__(self) -> None:
        self.sender = ""

    def note(self, msg: Message) -> None:
        if msg.message_type is MessageType.METHOD_CALL:
            self.sender = msg.sender or ""


class _Interface(ServiceInterface):
    """A ServiceInterface with power-profiles-daemon's habits: one getter per property, one publish(changed).

    Each property has exactly one getter (the dbus-fast property function), used both by `Get` and
    by `publish(names)`, so a `Get` and a `PropertiesChanged` can never disagree; callers say *what*
    may have changed, `publish` works out which values really did. Its introspection adds what
    dbus-fast cannot derive (EmitsChangedSignal, names of out and signal arguments).

    The D-Bus signatures are the `Annotated` types of the decorated functions (dbus-fast reads them).
    """

    EMITS_CHANGED: dict[str, str] = {}  # property -> annotation value, where it is not "true"
    ARG_NAMES: dict[str, tuple[str, ...]] = {}  # method -> out-argument names, signal -> argument names

    def __init__(self, name: str, control: Control):
        super().__init__(name)
        self.control = control
        self._properties = {prop.name: prop for prop in ServiceInterface._get_properties(self)}
        self._announced: dict[str, Any] = {}

    def value(self, name: str) -> Any:
        """The value of one property, through the same getter `Get` uses."""
        return self._properties[name].prop_getter(self)

    def prime(self) -> None:
        """Take the current values as announced (at export, before any client listens)."""
        self._announced = {name: self.value(name) for name in self._properties}

    def publish(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Emit PropertiesChanged with those of `names` (all when None) whose value differs from the last announced."""
        changed = {}
        for name in self._properties if names is None else names:
            if self.EMITS_CHANGED.get(name, "true") == "const":
                continue
            value = self.value(name)
            if self._announced.get(name, _UNSET) != value:
                self._announced[name] = value
                changed[name] = value
        if changed:
            self.emit_properties_changed(changed)
        return changed

    def introspect(self):
        """dbus-fast's introspection plus what it cannot derive: EmitsChangedSignal, out and signal argument names."""
        interface = super().introspect()
        for prop in interface.properties:
            prop.annotations[contract.EMITS_CHANGED_SIGNAL] = self.EMITS_CHANGED.get(prop.name, "true")
        for member, args in [*((m.name, m.out_args) for m in interface.methods),
                             *((s.name, s.args) for s in interface.signals)]:
            for arg, name in zip(args, self.ARG_NAMES.get(member, ())):
                arg.name = name
        return interface


def _invalid_mode(error: InvalidModeError) -> DBusError:
    return DBusError(contract.ERROR_INVALID_MODE, str(error))


class Efficiency(_Interface):
    """`Mode` (the user's choice) and `EffectiveMode` (what routing uses), like ppd's selected and active profile.

    Holds belong to the caller's bus connection: `DBusService` drops them when NameOwnerChanged says
    it closed.
    """

    EMITS_CHANGED = {"Modes": "const"}
    ARG_NAMES = {"GetMode": ("mode",), "GetEffectiveMode": ("mode",), "ListModes": ("modes",),
                 "GetModeInfo": ("info",), "HoldMode": ("cookie",), "ModeChanged": ("old", "new", "reason")}

    def __init__(self, control: Control, context: CallContext):
        super().__init__(contract.EFFICIENCY, control)
        self.context = context

    def _set_mode(self, mode: str) -> None:
        try:
            self.control.set_mode(mode, "user")
        except InvalidModeError as error:
            raise _invalid_mode(error) from None

    @dbus_property(name="Mode")
    def mode(self) -> DBusStr:
        return self.control.mode()

    @mode.setter
    def mode(self, value: DBusStr):
        self._set_mode(value)

    @dbus_property(access=READ, name="EffectiveMode")
    def effective_mode(self) -> DBusStr:
        return self.control.effective_mode()

    @dbus_property(access=READ, name="Modes")
    def modes(self) -> VarDicts:
        return vardicts(self.control.modes())

    @dbus_property(access=READ, name="Holds")
    def holds(self) -> VarDicts:
        return vardicts(self.control.holds())

    @dbus_property(access=READ, name="Degraded")
    def degraded(self) -> DBusStr:
        return self.control.degraded()

    @method(name="SetMode")
    def set_mode(self, mode: DBusStr):
        self._set_mode(mode)

    @method(name="GetMode")
    def get_mode(self) -> DBusStr:
        return self.value("Mode")

    @method(name="GetEffectiveMode")
    def get_effective_mode(self) -> DBusStr:
        return self.value("EffectiveMode")

    @method(name="ListModes")
    def list_modes(self) -> VarDicts:
        return self.value("Modes")

    @method(name="GetModeInfo")
    def get_mode_info(self, mode: DBusStr) -> VarDict:
        try:
            return vardict(self.control.mode_info(mode))
        except InvalidModeError as error:
            raise _invalid_mode(error) from None

    @method(name="HoldMode")
    def hold_mode(self, mode: DBusStr, reason: DBusStr, app_id: DBusStr) -> DBusUInt32:
        try:
            return self.control.hold(mode, reason, app_id, owner=self.context.sender)
        except InvalidModeError as error:
            raise _invalid_mode(error) from None

    @method(name="ReleaseMode")
    def release_mode(self, cookie: DBusUInt32):
        try:
            self.control.release(cookie, owner=self.context.sender)
        except KeyError:
            raise DBusError(contract.ERROR_NO_SUCH_HOLD, f"no hold with cookie {cookie}") from None
        except PermissionError:
            raise DBusError(contract.ERROR_NOT_HOLDER,
                            f"hold {cookie} was taken by another connection; only its holder may release it") from None

    @signal(name="ModeChanged")
    def mode_changed(self, old: str, new: str, reason: str) -> Annotated[list, DBusSignature("sss")]:
        return [old, new, reason]


class Backends(_Interface):
    ARG_NAMES = {"BackendStateChanged": ("id", "state")}

    def __init__(self, control: Control):
        super().__init__(contract.BACKENDS, control)
        self._states: dict[str, dict[str, Variant]] = {}

    def state(self, backend_id: str) -> dict[str, Variant]:
        return vardict(self.control.backend(backend_id))

    def prime(self) -> None:
        super().prime()
        self._states = {backend_id: self.state(backend_id) for backend_id in self.control.backend_ids()}

    def publish_states(self, backend_ids: Iterable[str]) -> None:
        """BackendStateChanged for each of `backend_ids` whose state differs from the last announced."""
        for backend_id in backend_ids:
            if backend_id not in self._states and backend_id not in self.control.backend_ids():
                continue
            state = self.state(backend_id)
            if self._states.get(backend_id) != state:
                self._states[backend_id] = state
                self.backend_state_changed(backend_id, state)

    @dbus_property(access=READ, name="Backends")
    def backends(self) -> VarDicts:
        return vardicts(self.control.backends())

    @method(name="SetBackendEnabled")
    def set_backend_enabled(self, id: DBusStr, enabled: DBusBool):  # noqa: A002 - the contract's argument name
        try:
            self.control.set_backend_enabled(id, enabled)
        except KeyError:
            known = ", ".join(self.control.backend_ids())
            raise DBusError(contract.ERROR_UNKNOWN_BACKEND, f"unknown backend {id!r}; configured: {known}") from None

    @signal(name="BackendStateChanged")
    def backend_state_changed(self, backend_id: str, state: dict) -> Annotated[list, DBusSignature("sa{sv}")]:
        return [backend_id, state]


# SimulateRouting: accepted keys and the D-Bus types each may arrive as.
_NUMBERS = frozenset("ynqiuxtd")
_INTEGERS = frozenset("ynqiuxt")
SIMULATE_KEYS: dict[str, frozenset[str]] = {
    "model": frozenset("s"),
    "api": frozenset("s"),
    "target_backend": frozenset("s"),
    "priority": frozenset("s"),
    "client_id": frozenset("s"),
    "latency_critical": frozenset("b"),
    "power_efficient": frozenset("b"),
    "max_latency_ms": _NUMBERS,
    "max_power_watts": _NUMBERS,
    "expected_tokens": _INTEGERS,
}


def simulate_description(request: dict[str, Variant]) -> dict[str, Any]:
    """The planner's description from SimulateRouting's a{sv}; InvalidArgs names a bad key or type."""
    description = {}
    for key, variant in request.items():
        allowed = SIMULATE_KEYS.get(key)
        if allowed is None:
            raise DBusError(ErrorType.INVALID_ARGS,
                            f"unknown key {key!r}; accepted keys: {', '.join(SIMULATE_KEYS)}")
        if variant.signature not in allowed:
            raise DBusError(ErrorType.INVALID_ARGS,
                            f"{key!r} must have D-Bus type {' or '.join(sorted(allowed))}, got {variant.signature!r}")
        description[key] = variant.value
    return description


class Routing(_Interface):
    ARG_NAMES = {"GetRecentDecisions": ("decisions",), "SimulateRouting": ("backend", "reason"),
                 "Reload": ("applied", "summary"), "Reloaded": ("applied", "summary")}

    def __init__(self, control: Control):
        super().__init__(contract.ROUTING, control)

    @dbus_property(access=READ, name="QueueDepth")
    def queue_depth(self) -> DBusUInt32:
        return self.control.routing()["queue_depth"]

    @dbus_property(access=READ, name="InFlight")
    def in_flight(self) -> DBusUInt32:
        return self.control.routing()["in_flight"]

    @dbus_property(access=READ, name="TotalRequests")
    def total_requests(self) -> DBusUInt64:
        return self.control.routing()["total_requests"]

    @dbus_property(access=READ, name="Paused")
    def paused(self) -> DBusBool:
        return bool(self.control.routing()["paused"])

    @method(name="Pause")
    def pause(self):
        self.control.pause(None, "paused over D-Bus")

    @method(name="Resume")
    def resume(self):
        self.control.resume(None)

    @method(name="GetRecentDecisions")
    def get_recent_decisions(self, limit: DBusUInt32) -> VarDicts:
        return vardicts(self.control.recent_decisions(limit))

    @method(name="SimulateRouting")
    def simulate_routing(self, request: VarDict) -> Annotated[list[str], DBusSignature("ss")]:
        description = simulate_description(request)
        try:
            answer = self.control.simulate(description)
        except ApiError as error:
            raise DBusError(ErrorType.INVALID_ARGS, error.message) from None
        if answer.get("backend") is None:
            return ["", f"{answer.get('reason', 'reject')}: {answer.get('message', '')}".rstrip(": ")]
        reason = answer.get("reason") or ""
        if answer.get("decision") == "queue":
            reason = f"queue: {reason}" if reason else "queue"
        return [answer["backend"], reason]

    @method(name="Reload")
    def reload(self) -> Annotated[list, DBusSignature("bs")]:
        ok, summary = self.control.reload()
        return [ok, summary]

    @signal(name="Reloaded")
    def reloaded(self, ok: bool, summary: str) -> Annotated[list, DBusSignature("bs")]:
        return [ok, summary]


def reload_summary(outcome: dict) -> tuple[bool, str]:
    """(applied, one readable line) from a reload outcome."""
    if not outcome.get("ok"):
        return False, "configuration kept: " + "; ".join(outcome.get("problems", []))
    parts = ["applied: " + (", ".join(outcome.get("applied", [])) or "nothing changed")]
    if outcome.get("restart_required"):
        parts.append("needs a restart: " + ", ".join(outcome["restart_required"]))
    return True, "; ".join(parts)


class Thermal(_Interface):
    ARG_NAMES = {"ThermalWarning": ("device", "celsius", "reason"), "ThrottlingStarted": ("device", "reasons"),
                 "ThrottlingStopped": ("device",)}

    def __init__(self, control: Control):
        super().__init__(contract.THERMAL, control)

    @dbus_property(access=READ, name="Devices")
    def devices(self) -> VarDicts:
        return vardicts(self.control.devices())

    @dbus_property(access=READ, name="HottestDevice")
    def hottest_device(self) -> DBusStr:
        return self.control.hottest()[0]

    @dbus_property(access=READ, name="HottestTemperature")
    def hottest_temperature(self) -> DBusDouble:
        return float(self.control.hottest()[1])

    @signal(name="ThermalWarning")
    def thermal_warning(self, device: str, celsius: float, reason: str) -> Annotated[list, DBusSignature("sds")]:
        return [device, celsius, reason]

    @signal(name="ThrottlingStarted")
    def throttling_started(self, device: str, reasons: list) -> Annotated[list, DBusSignature("sas")]:
        return [device, reasons]

    @signal(name="ThrottlingStopped")
    def throttling_stopped(self, device: str) -> DBusStr:
        return device


class SystemState(_Interface):
    ARG_NAMES = {"GetAutoModeReasoning": ("reasoning",)}

    def __init__(self, control: Control):
        super().__init__(contract.SYSTEM_STATE, control)

    @dbus_property(access=READ, name="OnBattery")
    def on_battery(self) -> DBusBool:
        return self.control.system()["on_battery"]

    @dbus_property(access=READ, name="BatteryPercent")
    def battery_percent(self) -> DBusDouble:
        return float(self.control.system()["battery_percent"])

    @dbus_property(access=READ, name="PowerSource")
    def power_source(self) -> DBusStr:
        return self.control.system()["power_source"]

    @dbus_property(access=READ, name="TotalPowerWatts")
    def total_power_watts(self) -> DBusDouble:
        return float(self.control.system()["total_power_watts"])

    @dbus_property(access=READ, name="PowerBudgetWatts")
    def power_budget_watts(self) -> DBusDouble:
        return float(self.control.system()["power_budget_watts"])

    @dbus_property(access=READ, name="PowerBreakerOpen")
    def power_breaker_open(self) -> DBusBool:
        return self.control.system()["power_breaker_open"]

    @method(name="GetAutoModeReasoning")
    def get_auto_mode_reasoning(self) -> DBusStr:
        return self.control.auto_reasoning()


class DBusService:
    """Exports the five interfaces on one bus and keeps them announced from the control change feed.

    Mode, power-source and breaker changes go out at once (as soon as the change in hand is
    complete, so one user action makes one `PropertiesChanged`); fast-moving values (power,
    temperatures, queue, in-flight) are coalesced into one flush COALESCE_SECONDS after the first
    change, so each interface sends at most about four a second, naming only values that changed.
    Signals (ModeChanged, ThermalWarning, ...) follow the `PropertiesChanged` of the same flush, so a
    client that reads properties when a signal arrives sees the new values.
    """

    def __init__(self, control: Control, *, coalesce_seconds: float = COALESCE_SECONDS):
        self.control = control
        self.coalesce_seconds = coalesce_seconds
        self.context = CallContext()
        self.efficiency = Efficiency(control, self.context)
        self.backends = Backends(control)
        self.routing = Routing(control)
        self.thermal = Thermal(control)
        self.system = SystemState(control)
        self.interfaces: tuple[_Interface, ...] = (self.efficiency, self.backends, self.routing, self.thermal,
                                                    self.system)
        self.bus: MessageBus | None = None
        self._dirty: set[_Interface] = set()
        self._dirty_backends: set[str] = set()
        self._flush_handle: asyncio.Handle | None = None
        self._flush_soon = False
        self._signals: list[tuple[Callable[..., Any], tuple]] = []  # signals to send after the next PropertiesChanged
        self._throttling: dict[str, bool] = {}
        # topic -> (interfaces it may change, announce at once?)
        self._topics: dict[str, tuple[tuple[_Interface, ...], bool]] = {
            "efficiency": ((self.efficiency,), True),
            "mode-changed": ((self.efficiency,), True),
            "breaker": (self.interfaces, True),
            "backends": ((self.backends,), False),
            "routing": ((self.routing,), False),
            "thermal": ((self.thermal,), False),
            "system": ((self.system,), False),
        }

    # ---- lifecycle -------------------------------------------------------------------

    async def export(self, bus: MessageBus) -> None:
        """Export the object, watch callers' connections for holds, and follow the change feed."""
        self.bus = bus
        bus.add_message_handler(self._on_message)
        await self._dbus_call("AddMatch", contract.name_owner_rule())
        for interface in self.interfaces:
            interface.prime()
        self._throttling = {d["id"]: bool(d["throttling"]) for d in self.control.devices()}
        for interface in self.interfaces:
            bus.export(contract.OBJECT_PATH, interface)
        self.control.add_listener(self._on_change)

    async def unexport(self) -> None:
        self.control.remove_listener(self._on_change)
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush_soon = False
        self._signals.clear()
        bus, self.bus = self.bus, None
        if bus is None:
            return
        bus.remove_message_handler(self._on_message)
        if bus.connected:
            for interface in self.interfaces:
                bus.unexport(contract.OBJECT_PATH, interface)
            await self._dbus_call("RemoveMatch", contract.name_owner_rule(), bus=bus)

    async def _dbus_call(self, member: str, *args: str, bus: MessageBus | None = None) -> None:
        bus = bus or self.bus
        reply = await bus.call(Message(destination=contract.DBUS_NAME, path=contract.DBUS_PATH,
                                       interface=contract.DBUS_INTERFACE, member=member,
                                       signature="s" * len(args), body=list(args)))
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name, str(plain(reply.body)))

    # ---- bus messages ----------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        """Note each call's sender (for holds); drop the holds of connections that closed."""
        self.context.note(msg)
        if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                and msg.sender == contract.DBUS_NAME and msg.interface == contract.DBUS_INTERFACE):
            name, _old, new = msg.body
            if name.startswith(":") and not new:
                try:
                    released = self.control.release_owner(name)
                except Exception:  # noqa: BLE001 - a bus callback must not die
                    log.exception("releasing the holds of %s failed", name)
                    return
                if released:
                    log.info("dropped %d hold(s) of %s: its bus connection closed", released, name)
        return None

    # ---- change feed -----------------------------------------------------------------

    def _on_change(self, topic: str, detail: dict) -> None:
        """Control listener: runs inside router code, so it must never raise."""
        try:
            self._handle(topic, detail)
        except Exception:  # noqa: BLE001
            log.exception("announcing %r on D-Bus failed", topic)

    def _handle(self, topic: str, detail: dict) -> None:
        if self.bus is None or not self.bus.connected:
            return
        interfaces, immediate = self._topics.get(topic, ((), False))
        self._dirty.update(interfaces)
        if topic == "backends" and "id" in detail:
            self._dirty_backends.add(detail["id"])
        elif topic == "breaker":
            self._dirty_backends.update(self.control.backend_ids())
            self._breaker_signal(detail.get("transition"))
        elif topic == "system" and "new" in detail:
            immediate = True  # the power source changed (plug, unplug, battery level)
        elif topic == "thermal":
            self._throttling_edges()
        elif topic == "mode-changed":
            self._signals.append((self.efficiency.mode_changed,
                                  (detail.get("old", ""), detail.get("new", ""), detail.get("reason", ""))))
        elif topic == "reload":
            self._signals.append((self.routing.reloaded, reload_summary(detail)))
        self._schedule(immediate or bool(self._signals))

    def _schedule(self, immediate: bool) -> None:
        """Flush once the current change is complete (immediate), or COALESCE_SECONDS after the first change."""
        loop = asyncio.get_running_loop()
        if immediate:
            if not self._flush_soon:
                if self._flush_handle is not None:
                    self._flush_handle.cancel()
                self._flush_handle = loop.call_soon(self.flush)
                self._flush_soon = True
        elif self._flush_handle is None:
            self._flush_handle = loop.call_later(self.coalesce_seconds, self.flush)

    def flush(self) -> None:
        """Announce what changed since the last flush: PropertiesChanged first, then the queued signals."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush_soon = False
        dirty, self._dirty = self._dirty, set()
        backend_ids, self._dirty_backends = self._dirty_backends, set()
        signals, self._signals = self._signals, []
        if self.bus is None or not self.bus.connected:
            return
        try:
            for interface in self.interfaces:
                if interface in dirty:
                    interface.publish()
            self.backends.publish_states(sorted(backend_ids))
            for emit, args in signals:
                emit(*args)
        except Exception:  # noqa: BLE001 - a failed announcement must not stop the next one
            log.exception("announcing changes on D-Bus failed")

    def _breaker_signal(self, transition) -> None:
        if transition is None or transition.breaker != "thermal" or not transition.opened:
            return
        celsius = next((d["temperature_celsius"] for d in self.control.devices() if d["id"] == transition.subject),
                       -1.0)
        self._signals.append((self.thermal.thermal_warning, (transition.subject, float(celsius), transition.reason)))

    def _throttling_edges(self) -> None:
        """ThrottlingStarted / ThrottlingStopped for each device whose throttling flag flipped since last time."""
        for device in self.control.devices():
            now = bool(device["throttling"])
            if self._throttling.get(device["id"], False) != now:
                self._throttling[device["id"]] = now
                if now:
                    self._signals.append((self.thermal.throttling_started,
                                          (device["id"], list(device["throttle_reasons"]))))
                else:
                    self._signals.append((self.thermal.throttling_stopped, (device["id"],)))

