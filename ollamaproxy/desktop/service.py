"""Starts and stops the desktop side of a router: the D-Bus service, the UPower follower and the notifier."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from dbus_fast import BusType, Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from . import contract
from .dbus_service import DBusService
from .notify import Notifier
from .upower import UPowerFollower

if TYPE_CHECKING:
    from ollamaproxy.service import Router

log = logging.getLogger("ollamaproxy.desktop")


class DesktopError(RuntimeError):
    """The desktop side cannot start (no session bus, or the bus name is taken); the message says which."""


class NameTakenError(DesktopError):
    pass


class DesktopHandle:
    """What `start_desktop` started; `stop()` takes it down in reverse order and reports every failure."""

    def __init__(self, bus: MessageBus, service: DBusService):
        self.bus = bus
        self.service = service
        self.upower: UPowerFollower | None = None
        self.notifier: Notifier | None = None

    @property
    def unique_name(self) -> str:
        return self.bus.unique_name

    async def stop(self) -> None:
        errors: list[Exception] = []
        for part in (self.notifier, self.upower):
            if part is None:
                continue
            try:
                await part.stop()
            except Exception as error:  # noqa: BLE001 - keep stopping the rest, report below
                errors.append(error)
        try:
            await self.service.unexport()
        except Exception as error:  # noqa: BLE001
            errors.append(error)
        if self.bus.connected:
            try:
                await self.bus.release_name(contract.BUS_NAME)
            except Exception as error:  # noqa: BLE001
                errors.append(error)
        self.bus.disconnect()
        if errors:
            raise ExceptionGroup("errors while stopping the desktop service", errors)


def notifications_enabled(router: "Router", requested: bool) -> bool:
    """`requested` and the config switch `[desktop] notifications` (true when the section or key is absent)."""
    section = getattr(router.config, "desktop", None)
    return requested and bool(getattr(section, "notifications", True))


async def start_desktop(router: "Router", *, session_bus_address: str | None = None,
                        system_bus_address: str | None = None, notifications: bool = True) -> DesktopHandle:
    """Export ie.fio.OllamaProxy on the session bus, own its name, follow UPower and start notifications.

    Bus addresses default to DBUS_SESSION_BUS_ADDRESS / DBUS_SYSTEM_BUS_ADDRESS as for any client.
    Raises DesktopError when the session bus cannot be reached and NameTakenError when another
    process owns the name. UPower or a notification daemon being absent is logged, not raised.
    """
    try:
        bus = await MessageBus(bus_address=session_bus_address, bus_type=BusType.SESSION).connect()
    except Exception as error:  # noqa: BLE001 - any failure here means "no session bus"
        raise DesktopError(f"cannot connect to the session bus: {error}") from error
    service = DBusService(router.control)
    handle = DesktopHandle(bus, service)
    try:
        await service.export(bus)
        reply = await bus.request_name(contract.BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            owner = await _owner(bus, contract.BUS_NAME)
            raise NameTakenError(f"{contract.BUS_NAME} is already owned on the session bus by "
                                 f"{owner or 'another process'} (is another ollamaproxy running?)")
        handle.upower = UPowerFollower(router.power_source, bus_address=system_bus_address)
        await handle.upower.start()
        if notifications_enabled(router, notifications):
            handle.notifier = Notifier(router.control, bus)
            await handle.notifier.start()
    except BaseException:
        try:
            await handle.stop()
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.debug("cleanup after a failed start failed", exc_info=True)
        raise
    log.info("D-Bus service %s on the session bus as %s", contract.BUS_NAME, bus.unique_name)
    return handle


async def _owner(bus: MessageBus, name: str) -> str:
    reply = await bus.call(Message(destination=contract.DBUS_NAME, path=contract.DBUS_PATH,
                                   interface=contract.DBUS_INTERFACE, member="GetNameOwner", signature="s",
                                   body=[name]))
    return reply.body[0] if reply.message_type is MessageType.METHOD_RETURN else ""
