"""Desktop test fixtures: private dbus-daemon buses, python-dbusmock services, the D-Bus service, tool runners."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import wait_until
from ollamaproxy.desktop import contract
from ollamaproxy.hardware.readings import DeviceReading
from ollamaproxy.hardware.source import ProbeResult

ROOT = Path(__file__).resolve().parent.parent
CONTRACT_XML = ROOT / "dbus" / "ie.fio.OllamaProxy.xml"
MODEL = "llama3.2:1b"

__all__ = [
    "CONTRACT_XML", "MODEL", "ROOT", "FakeGpuSource", "SignalRecorder", "ToolResult", "call", "contract_node",
    "dbus_client", "desktop", "desktop_router", "get_all", "notification_mock", "require_tool", "run_tool",
    "session_bus", "system_bus", "upower_mock", "wait_until",
]


def contract_node():
    """dbus/ie.fio.OllamaProxy.xml, parsed."""
    from dbus_fast import introspection

    return introspection.Node.parse(CONTRACT_XML.read_text())


# ---------------------------------------------------------------- missing tools fail loudly


def require_tool(name: str) -> str:
    """Path of a command the desktop tests need; a missing one fails (skips only with OLLAMAPROXY_ALLOW_SKIP=1)."""
    path = shutil.which(name)
    if path is None:
        message = (f"{name!r} is not installed: the desktop tests need it (Debian: dbus-daemon, systemd for busctl, "
                   "libglib2.0-bin for gdbus)")
        if os.environ.get("OLLAMAPROXY_ALLOW_SKIP") == "1":
            pytest.skip(message)
        pytest.fail(message)
    return path


def _require_dbusmock() -> None:
    try:
        importlib.import_module("dbusmock")
    except ImportError as error:
        message = f"python-dbusmock is not installed ({error}): pip install python-dbusmock"
        if os.environ.get("OLLAMAPROXY_ALLOW_SKIP") == "1":
            pytest.skip(message)
        pytest.fail(message)


# ---------------------------------------------------------------- private buses

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>{bustype}</type>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _start_bus(tmp: Path, bustype: str) -> tuple[subprocess.Popen, str]:
    daemon = require_tool("dbus-daemon")
    conf = tmp / f"{bustype}_bus.conf"
    conf.write_text(BUS_CONFIG.format(bustype=bustype, socket=tmp / f"{bustype}_bus.socket"))
    proc = subprocess.Popen([daemon, f"--config-file={conf}", "--nofork", "--nopidfile", "--print-address=1"],
                            stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().strip()
    assert address.startswith("unix:"), f"dbus-daemon printed {address!r}"
    return proc, address


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()


@pytest.fixture
def session_bus(tmp_path, monkeypatch):
    """A private session bus; DBUS_SESSION_BUS_ADDRESS points at it (busctl --user and gdbus --session use it)."""
    bus_dir = tmp_path / "session-bus"
    bus_dir.mkdir()
    proc, address = _start_bus(bus_dir, "session")
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    yield address
    _stop(proc)


@pytest.fixture
def system_bus(tmp_path, monkeypatch):
    """A private stand-in for the system bus; DBUS_SYSTEM_BUS_ADDRESS points at it."""
    bus_dir = tmp_path / "system-bus"
    bus_dir.mkdir()
    proc, address = _start_bus(bus_dir, "system")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    yield address
    _stop(proc)


# ---------------------------------------------------------------- bus clients and calls


async def _connect(address: str):
    from dbus_fast.aio import MessageBus

    return await MessageBus(bus_address=address).connect()


@pytest.fixture
async def dbus_client(session_bus):
    """A dbus-fast connection to the private session bus (a client of the service)."""
    bus = await _connect(session_bus)
    yield bus
    bus.disconnect()


async def call(bus, interface: str, member: str, signature: str = "", body: list | None = None, *,
               destination: str = contract.BUS_NAME, path: str = contract.OBJECT_PATH):
    """One method call; returns the reply message (errors included, so tests can assert on their names)."""
    from dbus_fast import Message

    return await bus.call(Message(destination=destination, path=path, interface=interface, member=member,
                                  signature=signature, body=body or []))


async def get_all(bus, interface: str) -> dict:
    from dbus_fast import MessageType, unpack_variants

    reply = await call(bus, "org.freedesktop.DBus.Properties", "GetAll", "s", [interface])
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    return unpack_variants(reply.body[0])


async def _has_owner(bus, name: str) -> bool:
    reply = await call(bus, "org.freedesktop.DBus", "NameHasOwner", "s", [name],
                       destination="org.freedesktop.DBus", path="/org/freedesktop/DBus")
    return bool(reply.body[0])


class SignalRecorder:
    """Records every signal the service sends from its object (PropertiesChanged included), as plain values."""

    def __init__(self, bus):
        self.bus = bus
        self.signals: list[tuple[str, str, list]] = []
        self.rule = f"type='signal',path='{contract.OBJECT_PATH}'"

    async def start(self) -> "SignalRecorder":
        self.bus.add_message_handler(self._on_message)
        await call(self.bus, "org.freedesktop.DBus", "AddMatch", "s", [self.rule],
                   destination="org.freedesktop.DBus", path="/org/freedesktop/DBus")
        return self

    def _on_message(self, msg) -> None:
        from dbus_fast import MessageType, unpack_variants

        if msg.message_type is MessageType.SIGNAL and msg.path == contract.OBJECT_PATH:
            self.signals.append((msg.interface, msg.member, unpack_variants(msg.body)))

    def changed(self, interface: str) -> list[dict]:
        """The `changed` dicts of PropertiesChanged for one interface, oldest first."""
        return [body[1] for iface, member, body in self.signals
                if member == "PropertiesChanged" and body[0] == interface]

    def of(self, member: str) -> list[list]:
        return [body for _iface, m, body in self.signals if m == member]

    def clear(self) -> None:
        self.signals.clear()

    async def wait_for(self, predicate, timeout: float = 5.0, message: str = "a signal") -> None:
        await wait_until(predicate, timeout=timeout, message=message)


# ---------------------------------------------------------------- the service on a router


@pytest.fixture
async def desktop(session_bus):
    """Factory: `await desktop(router_handle, notifications=False)` starts the D-Bus service for a router."""
    from ollamaproxy.desktop.service import start_desktop

    require_tool("busctl")
    require_tool("gdbus")
    handles = []

    async def start(router_handle, *, notifications: bool = False, system_bus_address: str | None = None):
        router = getattr(router_handle, "router", router_handle)
        handle = await start_desktop(router, session_bus_address=session_bus, notifications=notifications,
                                     system_bus_address=system_bus_address or "unix:path=/nonexistent/system_bus")
        handles.append(handle)
        return handle

    yield start
    for handle in reversed(handles):
        await handle.stop()


@pytest.fixture
async def desktop_router(sims, routers, desktop):
    """Two simulated backends (an NPU and an NVIDIA GPU) behind a router with the D-Bus service running."""
    npu = await sims("npu", [MODEL], loaded=[MODEL])
    gpu = await sims("nvidia", [MODEL], loaded=[MODEL])
    from conftest import backend_entry

    router = await routers([backend_entry(npu, hardware="npu", power_watts=3),
                            backend_entry(gpu, hardware="nvidia", power_watts=250, latency_ms=50,
                                          tokens_per_second=150)])
    handle = await desktop(router)
    return router, handle


# ---------------------------------------------------------------- dbusmock services


@dataclass
class MockService:
    template: str
    parameters: str
    system: bool
    address: str
    log_path: Path
    proc: subprocess.Popen | None = None

    async def start(self) -> "MockService":
        _require_dbusmock()
        cmd = [sys.executable, "-m", "dbusmock", "--system" if self.system else "--session",
               "--template", self.template, "-p", self.parameters]
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS" if self.system else "DBUS_SESSION_BUS_ADDRESS"] = self.address
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        name = importlib.import_module(f"dbusmock.templates.{self.template}").BUS_NAME
        bus = await _connect(self.address)
        try:
            deadline = asyncio.get_running_loop().time() + 15
            while not await _has_owner(bus, name):
                if self.proc.poll() is not None:
                    raise AssertionError(f"dbusmock {self.template} exited: {self.log_path.read_text()}")
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"dbusmock {self.template} did not take {name}")
                await asyncio.sleep(0.02)
        finally:
            bus.disconnect()
        return self

    async def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            await asyncio.get_running_loop().run_in_executor(None, _stop, proc)


class UPowerMock(MockService):
    """dbusmock's upower template, plus helpers that change it the way upowerd would."""

    async def set(self, path: str, interface: str, **values) -> None:
        from dbus_fast import Variant

        types = {"OnBattery": "b", "Percentage": "d", "State": "u", "WarningLevel": "u", "IsPresent": "b",
                 "Type": "u"}
        bus = await _connect(self.address)
        try:
            reply = await call(bus, "org.freedesktop.DBus.Mock", "UpdateProperties", "sa{sv}",
                               [interface, {k: Variant(types[k], v) for k, v in values.items()}],
                               destination="org.freedesktop.UPower", path=path)
            assert reply.error_name is None, reply.body
        finally:
            bus.disconnect()

    async def on_battery(self, on_battery: bool) -> None:
        await self.set("/org/freedesktop/UPower", "org.freedesktop.UPower", OnBattery=on_battery)

    async def battery(self, percent: float, state: int, warning: int = 1) -> None:
        await self.set("/org/freedesktop/UPower/devices/DisplayDevice", "org.freedesktop.UPower.Device",
                       IsPresent=True, Type=2, Percentage=float(percent), State=state, WarningLevel=warning)


class NotificationMock(MockService):
    async def notifications(self) -> list[list]:
        """Arguments of every Notify call so far, plain values, oldest first."""
        from dbus_fast import unpack_variants

        bus = await _connect(self.address)
        try:
            reply = await call(bus, "org.freedesktop.DBus.Mock", "GetMethodCalls", "s", ["Notify"],
                               destination="org.freedesktop.Notifications", path="/org/freedesktop/Notifications")
        finally:
            bus.disconnect()
        return [unpack_variants(args) for _timestamp, args in reply.body[0]]


@pytest.fixture
async def upower_mock(system_bus, tmp_path):
    """org.freedesktop.UPower (dbusmock template) on the private system bus, on AC with a battery at 80 %."""
    mock = UPowerMock("upower", '{"OnBattery": false, "DaemonVersion": "0.99.20"}', True, system_bus,
                      tmp_path / "upower-mock.log")
    await mock.start()
    await mock.battery(80.0, 1)
    yield mock
    await mock.stop()


@pytest.fixture
async def notification_mock(session_bus, tmp_path):
    """org.freedesktop.Notifications (dbusmock template) on the private session bus."""
    mock = NotificationMock("notification_daemon", "{}", False, session_bus, tmp_path / "notifications-mock.log")
    await mock.start()
    yield mock
    await mock.stop()


# ---------------------------------------------------------------- command-line tools


@dataclass
class ToolResult:
    returncode: int
    stdout: str
    stderr: str


async def run_tool(*argv: str, check: bool = True, timeout: float = 30.0, env: dict | None = None) -> ToolResult:
    """Run a command as a user would type it, without blocking the event loop the service runs on."""
    if not argv[0].startswith("/"):
        require_tool(argv[0])
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE,
                                                env=dict(os.environ, **(env or {})))
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)} did not finish within {timeout}s") from None
    result = ToolResult(proc.returncode, out.decode(), err.decode())
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr or result.stdout}")
    return result


# ---------------------------------------------------------------- telemetry by hand


class FakeGpuSource:
    """A telemetry source whose GPU readings the test sets (stands in for NVML)."""

    name = "fake-nvml"
    category = "fake-gpu"
    detail = ""

    def __init__(self, gpus: int = 1):
        self.readings = {i: {"power_w": 50.0, "temperature_c": 50.0} for i in range(gpus)}

    def probe(self):
        return ProbeResult.OK

    def read(self, now):
        return [DeviceReading(device_id=f"nvidia:{i}", kind="nvidia", source=self.name, taken_at=now,
                              label=f"GPU {i}", **values)
                for i, values in self.readings.items()]
