"""`ollamaproxy status | mode | backends | hold` as a user runs them, against the service on a private session bus."""

import json
import sys

import pytest

from desktop_fixtures import *  # noqa: F403
from desktop_fixtures import run_tool

NOT_RUNNING = "ollamaproxy is not running on the session bus (no owner for ie.fio.OllamaProxy)"


async def cli(*args: str, check: bool = False):
    return await run_tool(sys.executable, "-m", "ollamaproxy", *args, check=check)


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["mode"], ["mode", "quiet"], ["backends"],
                                  ["hold", "quiet", "--", "true"], ["top", "--frames", "1"]])
async def test_without_the_service_each_command_says_so_and_exits_3(session_bus, args):
    result = await cli(*args)
    assert result.returncode == 3, result
    assert result.stderr.strip() == NOT_RUNNING and "Traceback" not in result.stderr


async def test_without_a_session_bus_it_exits_3_too(tmp_path):
    result = await run_tool(sys.executable, "-m", "ollamaproxy", "status", check=False,
                            env={"DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path}/nothing"})
    assert result.returncode == 3 and "cannot connect to the session bus" in result.stderr
    assert "Traceback" not in result.stderr


async def test_status_on_one_screen_and_as_json(desktop_router):
    text = await cli("status", check=True)
    lines = text.stdout.splitlines()
    assert lines[0] == "Mode:       balanced (in force: balanced)"
    assert "Degraded:   no" in lines and "Power:      unknown" in lines
    assert "Hottest:    no temperatures known" in lines
    assert "Queue:      0 waiting, 0 running, 0 total" in lines
    assert any(line.split()[:3] == ["npu", "npu", "healthy"] for line in lines)
    assert any(line.split()[:3] == ["nvidia", "nvidia", "healthy"] for line in lines)

    state = json.loads((await cli("status", "--json", check=True)).stdout)
    assert state["mode"] == "balanced" and state["effective_mode"] == "balanced" and state["degraded"] == []
    assert state["power"] == {"source": "unknown", "on_battery": False, "battery_percent": None,
                              "total_watts": None, "budget_watts": None, "breaker_open": False}
    assert state["routing"] == {"queue_depth": 0, "in_flight": 0, "total_requests": 0, "paused": False}
    assert [b["id"] for b in state["backends"]] == ["npu", "nvidia"]


async def test_mode_get_set_and_bad_mode(desktop_router):
    router, _ = desktop_router
    assert (await cli("mode", check=True)).stdout == "Mode:      balanced\nEffective: balanced\n"
    result = await cli("mode", "ultra_efficiency", check=True)
    assert result.stdout.strip() == "Mode set to ultra-efficiency (in force: ultra-efficiency)"
    assert router.router.control.mode() == "ultra-efficiency"
    assert json.loads((await cli("mode", "--json", check=True)).stdout) == {
        "mode": "ultra-efficiency", "effective_mode": "ultra-efficiency"}
    assert json.loads((await cli("mode", "auto", "--json", check=True)).stdout)["mode"] == "auto"

    bad = await cli("mode", "turbo")
    assert bad.returncode == 2 and bad.stdout == ""
    assert "turbo" in bad.stderr and "performance, balanced, efficiency, quiet, ultra-efficiency, auto" in bad.stderr
    assert router.router.control.mode() == "auto"


async def test_backends_table_and_json(desktop_router):
    router, _ = desktop_router
    router.router.control.set_backend_enabled("nvidia", False)
    lines = (await cli("backends", check=True)).stdout.splitlines()
    assert lines[0].split() == ["ID", "HARDWARE", "HEALTH", "RUNNING", "QUEUED", "POWER", "TEMP", "NOTE"]
    assert lines[1].split()[:5] == ["npu", "npu", "healthy", "0/1", "0"]
    assert lines[2].split()[:5] == ["nvidia", "nvidia", "disabled", "0/1", "0"]
    rows = json.loads((await cli("backends", "--json", check=True)).stdout)
    assert [(r["id"], r["enabled"], r["health"]) for r in rows] == [("npu", True, "healthy"),
                                                                     ("nvidia", False, "disabled")]


async def test_hold_keeps_the_mode_while_the_command_runs_and_exits_with_its_code(desktop_router):
    router, _ = desktop_router
    probe = ("import subprocess, sys; "
             "print(subprocess.run(['busctl', '--user', 'get-property', 'ie.fio.OllamaProxy', '/ie/fio/OllamaProxy', "
             "'ie.fio.OllamaProxy.Efficiency', 'EffectiveMode'], capture_output=True, text=True).stdout.strip()); "
             "print(subprocess.run(['busctl', '--user', '--json=short', 'get-property', 'ie.fio.OllamaProxy', "
             "'/ie/fio/OllamaProxy', 'ie.fio.OllamaProxy.Efficiency', 'Holds'], capture_output=True, "
             "text=True).stdout.strip()); sys.exit(7)")
    result = await cli("hold", "ultra-efficiency", "--reason", "long render", "--", sys.executable, "-c", probe)
    assert result.returncode == 7, result
    effective, holds = result.stdout.splitlines()
    assert effective == 's "ultra-efficiency"'
    (held,) = json.loads(holds)["data"]
    assert held["mode"]["data"] == "ultra-efficiency" and held["reason"]["data"] == "long render"
    assert held["app_id"]["data"] == sys.executable.rsplit("/", 1)[-1]
    assert router.router.efficiency.holds == {}  # released when the command ended
    assert router.router.control.effective_mode() == "balanced"


async def test_hold_as_json_and_with_a_missing_command(desktop_router):
    router, _ = desktop_router
    result = await cli("hold", "quiet", "--app-id", "org.example.Test", "--json", "--", "true")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["mode"] == "quiet" and report["command"] == ["true"] and report["returncode"] == 0
    missing = await cli("hold", "quiet", "--", "/nonexistent/tool")
    assert missing.returncode == 127 and "cannot run /nonexistent/tool" in missing.stderr
    assert router.router.efficiency.holds == {}
    bad = await cli("hold", "turbo", "--", "true")
    assert bad.returncode == 2 and "valid modes" in bad.stderr
    need = await cli("hold", "quiet")
    assert need.returncode == 2 and "after --" in need.stderr
    assert (await cli("mode", check=True)).returncode == 0  # the service is still there for the next command


async def test_top_redraws_when_the_service_announces_a_change(desktop_router):
    import asyncio

    router, _ = desktop_router
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "ollamaproxy", "top", "--frames", "2",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        first = []
        async with asyncio.timeout(30):
            while not first or not first[-1].startswith("-- updated"):
                first.append((await proc.stdout.readline()).decode().rstrip("\n"))
        assert first[0] == "Mode:       balanced (in force: balanced)"
        router.router.control.set_mode("quiet")  # the service's signals, not a timer, trigger the redraw
        async with asyncio.timeout(30):
            rest, _err = await proc.communicate()
        assert proc.returncode == 0
        assert rest.decode().splitlines()[0] == "Mode:       quiet (in force: quiet)"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
