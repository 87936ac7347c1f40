"""The command line's D-Bus client: status, mode, backends and hold against the running service on the session bus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from . import contract
from .variants import plain

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3
CALL_TIMEOUT = 10.0


class NotRunning(Exception):
    """No session bus, or nobody owns ie.fio.OllamaProxy on it."""


class Client:
    """A connection to the service; every call raises DBusError with the service's error name on failure."""

    def __init__(self, bus: MessageBus):
        self.bus = bus

    @classmethod
    async def connect(cls, address: str | None = None) -> "Client":
        try:
            bus = await asyncio.wait_for(MessageBus(bus_address=address).connect(), CALL_TIMEOUT)
        except Exception as error:  # noqa: BLE001 - whatever the reason, there is no bus to talk to
            raise NotRunning(f"ollamaproxy: cannot connect to the session bus ({error}); "
                             "is this a desktop session?") from None
        client = cls(bus)
        if not (await client.call(contract.DBUS_INTERFACE, "NameHasOwner", "s", [contract.BUS_NAME],
                                  destination=contract.DBUS_NAME, path=contract.DBUS_PATH))[0]:
            bus.disconnect()
            raise NotRunning(f"ollamaproxy is not running on the session bus (no owner for {contract.BUS_NAME})")
        return client

    def close(self) -> None:
        self.bus.disconnect()

    async def call(self, interface: str, member: str, signature: str = "", body: list | None = None, *,
                   destination: str = contract.BUS_NAME, path: str = contract.OBJECT_PATH) -> list:
        reply = await asyncio.wait_for(self.bus.call(Message(
            destination=destination, path=path, interface=interface, member=member, signature=signature,
            body=body or [])), CALL_TIMEOUT)
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else reply.error_name
            raise DBusError(reply.error_name, text)
        return plain(reply.body)

    async def properties(self, interface: str) -> dict[str, Any]:
        return (await self.call("org.freedesktop.DBus.Properties", "GetAll", "s", [interface]))[0]

    async def status(self) -> dict[str, Any]:
        efficiency = await self.properties(contract.EFFICIENCY)
        system = await self.properties(contract.SYSTEM_STATE)
        thermal = await self.properties(contract.THERMAL)
        routing = await self.properties(contract.ROUTING)
        backends = (await self.properties(contract.BACKENDS))["Backends"]
        reasoning = (await self.call(contract.SYSTEM_STATE, "GetAutoModeReasoning"))[0]
        return {
            "mode": efficiency["Mode"],
            "effective_mode": efficiency["EffectiveMode"],
            "degraded": [code for code in efficiency["Degraded"].split(",") if code],
            "holds": efficiency["Holds"],
            "auto_reasoning": reasoning,
            "power": {"source": system["PowerSource"], "on_battery": system["OnBattery"],
                      "battery_percent": _known(system["BatteryPercent"]),
                      "total_watts": _known(system["TotalPowerWatts"]),
                      "budget_watts": system["PowerBudgetWatts"] or None,
                      "breaker_open": system["PowerBreakerOpen"]},
            "hottest": {"device": thermal["HottestDevice"] or None,
                        "celsius": _known(thermal["HottestTemperature"])},
            "routing": {"queue_depth": routing["QueueDepth"], "in_flight": routing["InFlight"],
                        "total_requests": routing["TotalRequests"], "paused": routing["Paused"]},
            "backends": backends,
        }


def _known(value: float) -> float | None:
    return None if value is None or value < 0 else value


# ---------------------------------------------------------------- running a command


def _run(action: Callable[[Client], Awaitable[int]], err: TextIO) -> int:
    """Connect, run `action`, and turn the ways it can fail into a message and an exit code."""

    async def main() -> int:
        client = await Client.connect()
        try:
            return await action(client)
        finally:
            client.close()

    try:
        return asyncio.run(main())
    except NotRunning as error:
        print(error, file=err)
        return EXIT_NOT_RUNNING
    except DBusError as error:
        print(f"ollamaproxy: {error.text}", file=err)
        return EXIT_USAGE if error.type == contract.ERROR_INVALID_MODE else EXIT_FAILED
    except asyncio.TimeoutError:
        print(f"ollamaproxy: {contract.BUS_NAME} did not answer within {CALL_TIMEOUT:g}s", file=err)
        return EXIT_FAILED


def _dump(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2, ensure_ascii=False)
    out.write("\n")


def status(*, as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    async def action(client: Client) -> int:
        state = await client.status()
        if as_json:
            _dump(state, out)
        else:
            out.write(format_status(state))
        return EXIT_OK

    return _run(action, err)


def mode(new_mode: str | None = None, *, as_json: bool = False, out: TextIO = sys.stdout,
         err: TextIO = sys.stderr) -> int:
    async def action(client: Client) -> int:
        if new_mode is not None:
            await client.call(contract.EFFICIENCY, "SetMode", "s", [new_mode])
        props = await client.properties(contract.EFFICIENCY)
        state = {"mode": props["Mode"], "effective_mode": props["EffectiveMode"]}
        if as_json:
            _dump(state, out)
        elif new_mode is not None:
            print(f"Mode set to {state['mode']} (in force: {state['effective_mode']})", file=out)
        else:
            print(f"Mode:      {state['mode']}\nEffective: {state['effective_mode']}", file=out)
        return EXIT_OK

    return _run(action, err)


def backends(*, as_json: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    async def action(client: Client) -> int:
        rows = (await client.properties(contract.BACKENDS))["Backends"]
        if as_json:
            _dump(rows, out)
        else:
            out.write(format_backends(rows))
        return EXIT_OK

    return _run(action, err)


def hold(held_mode: str, command: list[str], *, reason: str = "", app_id: str = "", as_json: bool = False,
         out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Hold `held_mode` while `command` runs (like `powerprofilesctl launch`); exits with the command's code."""
    name = os.path.basename(command[0])
    reason = reason or f"running {name}"
    app_id = app_id or name

    async def action(client: Client) -> int:
        cookie = (await client.call(contract.EFFICIENCY, "HoldMode", "sss", [held_mode, reason, app_id]))[0]
        loop = asyncio.get_running_loop()
        # Ctrl-C reaches the command (same process group); we wait for it and then release the hold
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(*command)
            except OSError as error:
                print(f"ollamaproxy: cannot run {command[0]}: {error.strerror or error}", file=err)
                returncode = 127
            else:
                returncode = await proc.wait()
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            try:
                await client.call(contract.EFFICIENCY, "ReleaseMode", "u", [cookie])
            except DBusError:
                pass  # a manual mode change cancelled it already
        returncode = 128 - returncode if returncode < 0 else returncode
        if as_json:
            _dump({"mode": held_mode, "cookie": cookie, "command": command, "returncode": returncode}, out)
        return returncode

    return _run(action, err)


# ---------------------------------------------------------------- text output


def format_status(state: dict[str, Any]) -> str:
    power = state["power"]
    lines = [f"Mode:       {state['mode']} (in force: {state['effective_mode']})"]
    for held in state["holds"]:
        why = f" ({held['reason']})" if held["reason"] else ""
        lines.append(f"Hold:       {held['mode']} by {held['app_id']}{why}")
    if state["mode"] == "auto":
        lines.append(f"Auto:       {state['auto_reasoning']}")
    lines.append(f"Degraded:   {', '.join(state['degraded']) if state['degraded'] else 'no'}")
    source = {"ac": "AC power", "battery": "on battery", "unknown": "unknown"}.get(power["source"], power["source"])
    if power["battery_percent"] is not None:
        source += f" (battery {power['battery_percent']:.0f} %)"
    lines.append(f"Power:      {source}")
    draw = f"{power['total_watts']:.0f} W" if power["total_watts"] is not None else "unknown"
    if power["budget_watts"]:
        draw += f" of {power['budget_watts']:.0f} W budget" + (" (BREAKER OPEN: new work held)"
                                                               if power["breaker_open"] else "")
    lines.append(f"Draw:       {draw}")
    hottest = state["hottest"]
    lines.append("Hottest:    " + (f"{hottest['device']} at {hottest['celsius']:.0f} °C" if hottest["device"]
                                   else "no temperatures known"))
    routing = state["routing"]
    lines.append(f"Queue:      {routing['queue_depth']} waiting, {routing['in_flight']} running, "
                 f"{routing['total_requests']} total" + (" (PAUSED)" if routing["paused"] else ""))
    lines.append("Backends:")
    lines.extend("  " + line for line in format_backends(state["backends"]).splitlines())
    return "\n".join(lines) + "\n"


def format_backends(rows: list[dict[str, Any]]) -> str:
    table = [("ID", "HARDWARE", "HEALTH", "RUNNING", "QUEUED", "POWER", "TEMP", "NOTE")]
    for row in rows:
        note = row.get("breaker_reason") or ("" if row.get("health") in ("healthy", "busy")
                                             else row.get("health_reason", ""))
        if not note and row.get("loaded_models"):
            note = "loaded: " + ", ".join(row["loaded_models"])
        table.append((
            row.get("id", "?"), row.get("hardware", "?"),
            row.get("health", "?") + (f" ({row['breaker']})" if row.get("breaker") else ""),
            f"{row.get('in_flight', 0)}/{row.get('capacity', 0)}", str(row.get("queued", 0)),
            f"{row['power_watts']:.0f} W" if row.get("power_watts", -1) >= 0 else "-",
            f"{row['temperature_celsius']:.0f} °C" if row.get("temperature_celsius", -1) >= 0 else "-",
            note))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    return "".join(("  ".join(cell.ljust(width) for cell, width in zip(r, widths)) + "  " + r[-1]).rstrip() + "\n"
                   for r in table)


# ---------------------------------------------------------------- a live view


def top(*, frames: int | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Redraw the status screen whenever the service announces a change (signals only, no polling).

    `frames` stops after that many screens (for scripts and tests); Ctrl-C stops otherwise.
    """

    async def action(client: Client) -> int:
        changed = asyncio.Event()
        changed.set()  # the first screen at once

        def on_message(message: Message) -> None:
            if message.message_type is MessageType.SIGNAL:
                changed.set()

        rule = f"type='signal',sender='{contract.BUS_NAME}',path='{contract.OBJECT_PATH}'"
        client.bus.add_message_handler(on_message)
        await client.call(contract.DBUS_INTERFACE, "AddMatch", "s", [rule],
                          destination=contract.DBUS_NAME, path=contract.DBUS_PATH)
        drawn = 0
        clear = "\x1b[H\x1b[2J" if out.isatty() else ""
        while frames is None or drawn < frames:
            await changed.wait()
            changed.clear()
            state = await client.status()
            stamp = time.strftime("%H:%M:%S")
            out.write(f"{clear}{format_status(state)}-- updated {stamp}; redrawn on every change, Ctrl-C quits --\n")
            out.flush()
            drawn += 1
        return EXIT_OK

    try:
        return _run(action, err)
    except KeyboardInterrupt:
        return EXIT_OK
