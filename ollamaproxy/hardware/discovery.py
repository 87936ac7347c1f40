"""Device discovery and hot-plug through pyudev: DRM cards, NPUs (`accel`), hwmon devices and power supplies.

Ids match the telemetry readings' where the same device has both ("hwmon:<name>:<parent>",
"npu:<PCI address>"); a DRM card is "drm:<PCI address>" and a power supply
"power_supply:<name>". `bus_id` (the PCI address) links a card to the NVML/hwmon readings of
the same GPU. Kinds: "igpu" | "dgpu" | "nvidia" | "npu" | "cpu" | "nvme" | "battery" | "mains"
| "other", with the GPU rules of `classify`.

`HotplugWatcher` turns udev events into `callback(action, device)` calls on the event loop, as
they arrive (the monitor's socket is an `add_reader` source; nothing polls on a timer). A
"remove" event carries no attributes any more, so the watcher answers it with the device as it
was last seen (discovered at start or added since); an eGPU that leaves is reported with its
kind and PCI address. Power supplies also send "change" (plugged, unplugged, charge steps).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .accel import npu_id
from .classify import NPU_DRIVERS, gpu_kind, hwmon_kind, vendor_hex

log = logging.getLogger(__name__)

SUBSYSTEMS = ("drm", "accel", "hwmon", "power_supply")
CARD = re.compile(r"^card\d+$")
ACCEL = re.compile(r"^accel\d+$")
PCI_IN_PATH = re.compile(r"/([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])(?=/|$)")
LINE_TYPES = frozenset({"Mains", "USB", "USB_C", "USB_PD", "USB_PD_DRP"})


@dataclass(frozen=True)
class DiscoveredDevice:
    device_id: str
    kind: str
    subsystem: str
    driver: str | None
    vendor_id: str | None
    sys_path: str
    integrated: bool
    bus_id: str | None = None
    name: str = ""


@dataclass(frozen=True)
class DeviceFacts:
    """What classification needs to know about one udev device (read from udev, or given by tests)."""

    subsystem: str
    sys_name: str
    sys_path: str
    pci_vendor: str | None = None
    pci_driver: str | None = None
    pci_bus_id: str | None = None
    upstream_bus_id: str | None = None
    parent_name: str | None = None
    parent_driver: str | None = None
    hwmon_name: str | None = None
    supply_type: str | None = None
    supply_scope: str | None = None


def bus_id_from_path(sys_path: str) -> str | None:
    """The PCI address nearest the device in its sysfs path (works after the device is gone)."""
    found = PCI_IN_PATH.findall(sys_path.lower())
    return found[-1] if found else None


def classify(facts: DeviceFacts) -> DiscoveredDevice | None:
    """A DiscoveredDevice for a card, NPU, hwmon device or power supply; None for anything else
    (DRM connectors, render nodes, subsystems we do not watch)."""
    bus_id = facts.pci_bus_id or bus_id_from_path(facts.sys_path)
    if facts.subsystem == "drm":
        if not CARD.match(facts.sys_name):
            return None
        kind = gpu_kind(facts.pci_vendor, facts.pci_driver, bus_id, facts.upstream_bus_id)
        return DiscoveredDevice(f"drm:{bus_id or facts.sys_name}", kind, "drm", facts.pci_driver,
                                facts.pci_vendor, facts.sys_path, kind == "igpu", bus_id, facts.sys_name)
    if facts.subsystem == "accel":
        if not ACCEL.match(facts.sys_name):
            return None
        kind = "npu" if facts.pci_driver in NPU_DRIVERS else "other"
        return DiscoveredDevice(npu_id(bus_id, facts.sys_name), kind, "accel", facts.pci_driver,
                                facts.pci_vendor, facts.sys_path, False, bus_id, facts.sys_name)
    if facts.subsystem == "hwmon":
        name = facts.hwmon_name
        if not name:
            return None
        pci_kind = gpu_kind(facts.pci_vendor, facts.pci_driver, bus_id, facts.upstream_bus_id) \
            if facts.pci_driver else None
        kind = hwmon_kind(name, pci_kind)
        return DiscoveredDevice(f"hwmon:{name}:{facts.parent_name or facts.sys_name}", kind, "hwmon", name,
                                facts.pci_vendor, facts.sys_path, kind == "igpu", bus_id, name)
    if facts.subsystem == "power_supply":
        if facts.supply_type == "Battery":
            kind = "other" if facts.supply_scope == "Device" else "battery"
        elif facts.supply_type in LINE_TYPES:
            kind = "mains"
        else:
            kind = "other"
        return DiscoveredDevice(f"power_supply:{facts.sys_name}", kind, "power_supply", facts.parent_driver,
                                None, facts.sys_path, False, None, facts.sys_name)
    return None


# ---- pyudev adapters ------------------------------------------------------------------------


def _attr(device: Any, name: str) -> str | None:
    if device is None:
        return None
    try:
        value = device.attributes.get(name)
    except (OSError, UnicodeDecodeError):
        return None
    if value is None:
        return None
    return value.decode(errors="replace").strip() if isinstance(value, bytes) else str(value).strip()


def facts_from_udev(device: Any) -> DeviceFacts:
    """Read a pyudev Device into DeviceFacts (attributes of a removed device read as None)."""
    subsystem = device.subsystem or ""
    pci = None
    try:
        pci = device if subsystem == "pci" else device.find_parent("pci")
    except (OSError, ValueError):
        pci = None
    parent = None
    try:
        parent = device.parent
    except (OSError, ValueError):
        parent = None
    upstream = None
    if pci is not None:
        try:
            upstream = pci.parent
        except (OSError, ValueError):
            upstream = None
    is_hwmon = subsystem == "hwmon"
    is_supply = subsystem == "power_supply"
    return DeviceFacts(
        subsystem=subsystem,
        sys_name=device.sys_name,
        sys_path=device.sys_path,
        pci_vendor=vendor_hex(_attr(pci, "vendor")),
        pci_driver=pci.driver if pci is not None else None,
        pci_bus_id=pci.sys_name if pci is not None else None,
        upstream_bus_id=upstream.sys_name if upstream is not None else None,
        parent_name=parent.sys_name if parent is not None else None,
        parent_driver=parent.driver if parent is not None else None,
        hwmon_name=_attr(device, "name") if is_hwmon else None,
        supply_type=(_attr(device, "type") or device.properties.get("POWER_SUPPLY_TYPE")) if is_supply else None,
        supply_scope=(_attr(device, "scope") or device.properties.get("POWER_SUPPLY_SCOPE")) if is_supply else None,
    )


def describe(device: Any) -> DiscoveredDevice | None:
    """Classify one pyudev Device; None when it is not a device we track."""
    return classify(facts_from_udev(device))


def discover(context: Any = None, subsystems: Iterable[str] = SUBSYSTEMS) -> list[DiscoveredDevice]:
    """Every card, NPU, hwmon device and power supply udev knows now, in a stable order."""
    import pyudev

    context = context if context is not None else pyudev.Context()
    found: list[DiscoveredDevice] = []
    for subsystem in subsystems:
        for device in context.list_devices(subsystem=subsystem):
            described = describe(device)
            if described is not None:
                found.append(described)
    return sorted(found, key=lambda d: (SUBSYSTEMS.index(d.subsystem) if d.subsystem in SUBSYSTEMS else 99,
                                        d.device_id))


# ---- hot-plug ------------------------------------------------------------------------------


HotplugCallback = Callable[[str, DiscoveredDevice], Any]


class HotplugWatcher:
    """Calls `callback(action, device)` for udev add/remove/change events of the watched subsystems.

    `start()` must run on the event loop that will deliver events; `stop()` is idempotent. The
    callback may be a plain function or a coroutine function (run as a task). A callback that
    raises is logged and does not stop the watcher.
    """

    def __init__(self, callback: HotplugCallback, *, context: Any = None,
                 subsystems: Iterable[str] = SUBSYSTEMS, source: str = "udev"):
        self.callback = callback
        self.subsystems = tuple(subsystems)
        self.source = source
        self._context = context
        self._monitor: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._known: dict[str, DiscoveredDevice] = {}
        self._tasks: set[asyncio.Task] = set()

    @property
    def running(self) -> bool:
        return self._monitor is not None

    def known(self) -> list[DiscoveredDevice]:
        """The devices present as far as this watcher knows (seeded by discover at start)."""
        return sorted(self._known.values(), key=lambda d: d.device_id)

    def start(self) -> None:
        if self._monitor is not None:
            return
        import pyudev

        loop = asyncio.get_running_loop()
        context = self._context if self._context is not None else pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(context, source=self.source)
        for subsystem in self.subsystems:
            monitor.filter_by(subsystem)
        monitor.start()
        # Listen first, then list: a device added in between is seen twice, never missed.
        self._known = {d.sys_path: d for d in discover(context, self.subsystems)}
        self._fd = monitor.fileno()
        loop.add_reader(self._fd, self._drain)
        self._monitor, self._loop = monitor, loop

    def stop(self) -> None:
        if self._monitor is None:
            return
        if self._loop is not None and self._fd is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._monitor = None
        self._loop = None
        self._fd = None

    def _drain(self) -> None:
        monitor = self._monitor
        while monitor is not None and self._monitor is monitor:
            try:
                device = monitor.poll(timeout=0)
            except OSError as exc:  # e.g. ENOBUFS after an event storm: keep listening
                log.warning("udev monitor: %s", exc)
                return
            if device is None:
                return
            self._handle(device.action or "", device)

    def _handle(self, action: str, device: Any) -> None:
        if action == "remove":
            described = self._known.pop(device.sys_path, None) or describe(device)
        else:
            described = describe(device)
            if described is not None:
                self._known[device.sys_path] = described
        if described is None:
            return
        try:
            result = self.callback(action, described)
        except Exception:
            log.exception("hot-plug callback failed for %s %s", action, described.device_id)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hot-plug callback failed", exc_info=task.exception())
