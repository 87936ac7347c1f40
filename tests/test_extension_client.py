"""The GNOME Shell extension's D-Bus client (gnome-extension/ollamaproxy@fio.ie/efficiencyClient.js)
under plain `gjs -m`, against the real service (`python -m ollamaproxy serve`) on a private session bus.

Each test runs one scenario of tests/gjs/client_test.js. The script prints TAP-like lines and,
when it needs the world to change, `STEP <action>`: this driver stops or starts the service, or
sets the mode from another client, while the script waits for the client to notice.

Needs `gjs` (Debian package gjs; 1.74 runs ESM with `gjs -m`) and `dbus-daemon`; without them
the tests skip and say so. The helpers here (private bus, service, simulated backend, fake sysfs)
are shared with test_extension_e2e.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
XML = ROOT / "dbus" / "ie.fio.OllamaProxy.xml"
CLIENT_TEST = ROOT / "tests" / "gjs" / "client_test.js"
BUS_NAME = "ie.fio.OllamaProxy"
OBJECT_PATH = "/ie/fio/OllamaProxy"

# ---------------------------------------------------------------- private buses

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def start_bus(tmp: Path) -> tuple[subprocess.Popen, str]:
    """A private dbus-daemon (no service files: nothing is auto-activated); returns (process, address)."""
    conf = tmp / "session-bus.conf"
    conf.write_text(BUS_CONFIG.format(socket=tmp / "session-bus.socket"))
    proc = subprocess.Popen(["dbus-daemon", f"--config-file={conf}", "--nofork", "--nopidfile",
                             "--print-address=1"], stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().strip()
    assert address.startswith("unix:"), f"dbus-daemon printed {address!r}"
    return proc, address


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            stream.close()


def dbus_call(address: str, interface: str, member: str, signature: str = "", body: list | None = None,
              *, destination: str = BUS_NAME, path: str = OBJECT_PATH):
    """One method call on `address` with dbus-fast; returns the reply body, raises DBusError on an error reply."""
    from dbus_fast import Message, MessageType
    from dbus_fast.aio import MessageBus
    from dbus_fast.errors import DBusError

    async def call():
        bus = await MessageBus(bus_address=address).connect()
        try:
            reply = await bus.call(Message(destination=destination, path=path, interface=interface,
                                           member=member, signature=signature, body=body or []))
        finally:
            bus.disconnect()
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name, reply.body[0] if reply.body else "")
        return reply.body

    return asyncio.run(call())


def name_owner(address: str, name: str = BUS_NAME) -> str | None:
    from dbus_fast.errors import DBusError
    try:
        return dbus_call(address, "org.freedesktop.DBus", "GetNameOwner", "s", [name],
                         destination="org.freedesktop.DBus", path="/org/freedesktop/DBus")[0]
    except DBusError:
        return None


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something truthy (assert_eventually); fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------- the real service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fake_sysfs(root: Path) -> Path:
    """A sysfs root with one CPU temperature sensor, a battery at 76 % and mains power online."""
    hwmon = root / "class" / "hwmon" / "hwmon0"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("coretemp\n")
    (hwmon / "temp1_label").write_text("Package id 0\n")
    (hwmon / "temp1_input").write_text("54000\n")
    supplies = root / "class" / "power_supply"
    (supplies / "BAT0").mkdir(parents=True)
    for name, value in {"type": "Battery", "status": "Charging", "capacity": "76",
                        "scope": "System"}.items():
        (supplies / "BAT0" / name).write_text(value + "\n")
    (supplies / "AC").mkdir()
    (supplies / "AC" / "type").write_text("Mains\n")
    (supplies / "AC" / "online").write_text("1\n")
    return root


class SimBackend:
    """A simulated Ollama backend (`python -m ollamaproxy sim`) on a free loopback port."""

    def __init__(self, name: str = "sim0", models: str = "qwen3:0.6b"):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ollamaproxy", "sim", "--port", "0", "--name", name, "--models", models],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        assert " listening on " in line, f"sim did not start: {line!r}"
        self.url = line.split(" listening on ", 1)[1].split()[0]

    def stop(self) -> None:
        stop_process(self.proc)


class Service:
    """`python -m ollamaproxy serve` on a given session bus, restartable, its log kept for failures."""

    def __init__(self, tmp: Path, session_address: str, sim_url: str, *,
                 system_address: str | None = None, python: str = sys.executable):
        self.tmp = tmp
        self.python = python
        self.config = tmp / "config.toml"
        sysfs = write_fake_sysfs(tmp / "sysfs")
        self.config.write_text(f"""
[server]
listen = "127.0.0.1:{free_port()}"
management = ""

[[backends]]
id = "sim0"
kind = "ollama"
url = "{sim_url}"
hardware = "nvidia"

[[backends]]
id = "gone0"
kind = "ollama"
url = "http://127.0.0.1:{free_port()}"
hardware = "cpu"

[telemetry]
sysfs_root = "{sysfs}"
nvidia_smi = "{tmp / 'no-nvidia-smi'}"

[desktop]
notifications = false

[efficiency]
quiet_hours = []  # Auto must not depend on when the suite runs
""")
        self.env = dict(os.environ,
                        DBUS_SESSION_BUS_ADDRESS=session_address,
                        # no UPower unless the caller provides a bus with one
                        DBUS_SYSTEM_BUS_ADDRESS=system_address or f"unix:path={tmp / 'no-system-bus'}",
                        XDG_STATE_HOME=str(tmp / "state"), XDG_CONFIG_HOME=str(tmp / "config"),
                        PYTHONUNBUFFERED="1")
        self.address = session_address
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "service already running"
        log = self.tmp / f"service-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "w") as out:
            self.proc = subprocess.Popen([self.python, "-m", "ollamaproxy", "serve", "--config", str(self.config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        try:
            wait_for(lambda: self.proc.poll() is not None or name_owner(self.address), timeout,
                     f"{BUS_NAME} on the bus")
        except AssertionError:
            self.stop()
            raise AssertionError(f"service did not own {BUS_NAME}:\n{self.log_text()}") from None
        if self.proc.poll() is not None:
            raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs if log.exists())


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (Debian: apt-get install gjs dbus)")


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def world(tmp_path):
    """A private session bus, a simulated backend and the real service (not started yet)."""
    require("gjs", "dbus-daemon")
    bus, address = start_bus(tmp_path)
    sim = SimBackend()
    service = Service(tmp_path, address, sim.url)
    yield service
    service.stop()
    sim.stop()
    stop_process(bus)


def run_scenario(service: Service, scenario: str, timeout: float = 60.0) -> list[str]:
    """Run one client_test.js scenario, performing its STEPs; fail with its output and the service log."""
    env = dict(service.env)
    proc = subprocess.Popen(["gjs", "-m", str(CLIENT_TEST), str(XML), scenario], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if line.startswith("STEP "):
                action, _, arg = line[5:].partition(" ")
                if action == "stop-service":
                    service.stop()
                elif action == "start-service":
                    service.start()
                elif action == "set-mode":
                    dbus_call(service.address, "ie.fio.OllamaProxy.Efficiency", "SetMode", "s", [arg])
                else:
                    raise AssertionError(f"unknown step {line!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{scenario} ran over {timeout}s")
        proc.wait(timeout=10)
    finally:
        stop_process(proc)
    output = "\n".join(lines)
    failed = [line for line in lines if line.startswith("not ok")]
    assert proc.returncode == 0 and not failed, (
        f"gjs scenario {scenario} failed (exit {proc.returncode}):\n{output}\n\n{service.log_text()}")
    assert any(line.startswith("ok - ") for line in lines), output
    return lines


# ---------------------------------------------------------------- tests


def test_client_reads_every_property_the_extension_shows(world):
    world.start()
    lines = run_scenario(world, "read")
    assert any("Modes ids = performance,balanced,efficiency,quiet,ultra-efficiency,auto" in line for line in lines)


def test_client_set_mode_waits_for_the_service_echo(world):
    world.start()
    run_scenario(world, "set-mode")
    assert dbus_call(world.address, "ie.fio.OllamaProxy.Efficiency", "GetMode")[0] == "ultra-efficiency"


def test_client_receives_changes_made_by_another_client(world):
    world.start()
    run_scenario(world, "changes")


def test_client_follows_the_service_disappearing_and_returning(world):
    world.start()
    run_scenario(world, "restart")


def test_client_started_before_the_service(world):
    run_scenario(world, "late-start")


def test_destroyed_client_emits_nothing(world):
    world.start()
    run_scenario(world, "destroy")
