"""The real D-Bus service on a private session bus, driven as users and clients drive it: busctl, gdbus, dbus-fast."""

import asyncio
import json
import signal
import sys

import pytest
from dbus_fast import ErrorType, MessageType, Variant

from desktop_fixtures import *  # noqa: F403
from desktop_fixtures import MODEL, FakeGpuSource, SignalRecorder, call, contract_node, get_all, run_tool, wait_until
from conftest import backend_entry
from ollamaproxy.desktop import contract
from ollamaproxy.desktop.service import NameTakenError, start_desktop

NAME, PATH = contract.BUS_NAME, contract.OBJECT_PATH
EFF, BACK, ROUT, THERM, SYS = contract.INTERFACES


async def busctl(*args: str, check: bool = True):
    return await run_tool("busctl", "--user", *args, check=check)


async def busctl_json(*args: str):
    return json.loads((await busctl("--json=short", *args)).stdout)


async def generate(http, router, headers=None):
    async with http.post(router.url + "/api/generate", json={"model": MODEL, "prompt": "hi", "stream": False},
                         headers=headers or {}) as resp:
        await resp.read()
        return resp.status, resp.headers


# ---------------------------------------------------------------- mode, as a user types it


async def test_busctl_and_gdbus_set_and_read_the_mode(desktop_router):
    router, _ = desktop_router
    assert (await busctl("get-property", NAME, PATH, EFF, "Mode")).stdout.strip() == 's "balanced"'
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "efficiency")
    assert (await busctl("get-property", NAME, PATH, EFF, "EffectiveMode")).stdout.strip() == 's "efficiency"'
    assert router.router.control.mode() == "efficiency"

    await busctl("call", NAME, PATH, EFF, "SetMode", "s", "Ultra Efficiency")  # an alias, as the seed spells it
    out = await run_tool("gdbus", "call", "--session", "--dest", NAME, "--object-path", PATH,
                         "--method", f"{EFF}.GetMode")
    assert out.stdout.strip() == "('ultra-efficiency',)"
    out = await run_tool("gdbus", "call", "--session", "--dest", NAME, "--object-path", PATH,
                         "--method", "org.freedesktop.DBus.Properties.Set", EFF, "Mode", "<'performance'>")
    out = await run_tool("gdbus", "call", "--session", "--dest", NAME, "--object-path", PATH,
                         "--method", "org.freedesktop.DBus.Properties.Get", EFF, "EffectiveMode")
    assert out.stdout.strip() == "(<'performance'>,)"
    assert await busctl_json("call", NAME, PATH, EFF, "GetEffectiveMode") == {"type": "s", "data": ["performance"]}


async def test_an_unknown_mode_is_an_invalid_mode_error_listing_the_valid_ids(desktop_router, dbus_client):
    bad = await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "turbo", check=False)
    assert bad.returncode != 0
    assert "turbo" in bad.stderr and "ultra-efficiency" in bad.stderr
    for member, signature, body in [("SetMode", "s", ["turbo"]), ("GetModeInfo", "s", ["turbo"]),
                                    ("HoldMode", "sss", ["turbo", "", "x"]), ("HoldMode", "sss", ["auto", "", "x"])]:
        reply = await call(dbus_client, EFF, member, signature, body)
        assert reply.message_type is MessageType.ERROR and reply.error_name == contract.ERROR_INVALID_MODE, member
        assert "performance, balanced, efficiency, quiet, ultra-efficiency, auto" in reply.body[0]
    out = await run_tool("gdbus", "call", "--session", "--dest", NAME, "--object-path", PATH,
                         "--method", f"{EFF}.SetMode", "turbo", check=False)
    assert out.returncode != 0 and "ie.fio.OllamaProxy.Error.InvalidMode" in out.stderr
    assert (await busctl("get-property", NAME, PATH, EFF, "Mode")).stdout.strip() == 's "balanced"'


async def test_mode_info_and_list(desktop_router, dbus_client):
    modes = await busctl_json("call", NAME, PATH, EFF, "ListModes")
    ids = [m["id"]["data"] for m in modes["data"][0]]
    assert ids == ["performance", "balanced", "efficiency", "quiet", "ultra-efficiency", "auto"]
    info = await busctl_json("call", NAME, PATH, EFF, "GetModeInfo", "s", "quiet")
    assert {k: v["data"] for k, v in info["data"][0].items()}["label"] == "Quiet"
    reasoning = await busctl_json("call", NAME, PATH, SYS, "GetAutoModeReasoning")
    assert reasoning["data"][0].startswith("(auto is not in force) balanced by rule")


# ---------------------------------------------------------------- every property, every interface


async def test_every_property_of_every_interface_reads_with_busctl_and_gdbus(desktop_router, dbus_client):
    for interface in contract_node().interfaces:
        for prop in interface.properties:
            value = await busctl_json("get-property", NAME, PATH, interface.name, prop.name)
            assert value["type"] == prop.signature, (interface.name, prop.name)
        out = await run_tool("gdbus", "call", "--session", "--dest", NAME, "--object-path", PATH,
                             "--method", "org.freedesktop.DBus.Properties.GetAll", interface.name)
        assert all(f"'{p.name}'" in out.stdout for p in interface.properties), interface.name
    efficiency = await get_all(dbus_client, EFF)
    assert efficiency == {"Mode": "balanced", "EffectiveMode": "balanced", "Holds": [], "Degraded": "",
                          "Modes": efficiency["Modes"]}
    backends = (await get_all(dbus_client, BACK))["Backends"]
    assert [b["id"] for b in backends] == ["npu", "nvidia"]
    assert backends[0] | {"url": "", "health_reason": ""} == {
        "id": "npu", "kind": "ollama", "hardware": "npu", "url": "", "health": "healthy", "health_reason": "",
        "enabled": True, "in_flight": 0, "capacity": 1, "queued": 0, "models": [MODEL], "loaded_models": [MODEL],
        "power_watts": -1.0, "temperature_celsius": -1.0, "breaker": "", "breaker_reason": ""}
    assert await get_all(dbus_client, ROUT) == {"QueueDepth": 0, "InFlight": 0, "TotalRequests": 0, "Paused": False}
    assert await get_all(dbus_client, THERM) == {"Devices": [], "HottestDevice": "", "HottestTemperature": -1.0}
    assert await get_all(dbus_client, SYS) == {"OnBattery": False, "BatteryPercent": -1.0, "PowerSource": "unknown",
                                               "TotalPowerWatts": -1.0, "PowerBudgetWatts": 0.0,
                                               "PowerBreakerOpen": False}


# ---------------------------------------------------------------- signals


async def test_mode_change_sends_properties_changed_and_mode_changed(desktop_router, dbus_client):
    recorder = await SignalRecorder(dbus_client).start()
    monitor = await asyncio.create_subprocess_exec(
        "gdbus", "monitor", "--session", "--dest", NAME, "--object-path", PATH,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        # gdbus monitor says whom it watches once its match rule is in place
        first = await asyncio.wait_for(monitor.stdout.readline(), 10)
        assert b"owned by" in first or b"Monitoring" in first, first
        await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "efficiency")
        await recorder.wait_for(lambda: recorder.of("ModeChanged"), message="ModeChanged")
        assert recorder.of("ModeChanged") == [["balanced", "efficiency", "user"]]
        assert recorder.changed(EFF) == [{"Mode": "efficiency", "EffectiveMode": "efficiency"}]
        seen = b""
        while b"ModeChanged" not in seen:
            seen += await asyncio.wait_for(monitor.stdout.readline(), 10)
        assert b"ie.fio.OllamaProxy.Efficiency.ModeChanged ('balanced', 'efficiency', 'user')" in seen
        changed_line = next(line for line in seen.splitlines() if b"PropertiesChanged" in line)
        assert b"('ie.fio.OllamaProxy.Efficiency', {" in changed_line and b"'Mode': <'efficiency'>" in changed_line
    finally:
        monitor.kill()
        await monitor.wait()
    recorder.clear()
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "efficiency")  # no change, no signal
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "auto")       # user mode changes, effective stays
    await recorder.wait_for(lambda: recorder.changed(EFF))
    assert recorder.changed(EFF) == [{"Mode": "auto", "EffectiveMode": "balanced"}]


async def test_properties_changed_agrees_with_get(desktop_router, dbus_client):
    """Every PropertiesChanged value is what Get answers at that moment (one getter for both)."""
    router, _ = desktop_router
    recorder = await SignalRecorder(dbus_client).start()
    await call(dbus_client, ROUT, "Pause")
    await recorder.wait_for(lambda: recorder.changed(ROUT) and recorder.changed(EFF))
    assert recorder.changed(ROUT)[0] == {"Paused": True}
    assert recorder.changed(EFF)[0] == {"Degraded": "paused"}
    assert (await get_all(dbus_client, ROUT))["Paused"] is True
    await call(dbus_client, ROUT, "Resume")
    await recorder.wait_for(lambda: len(recorder.changed(ROUT)) == 2)
    assert recorder.changed(ROUT)[1] == {"Paused": False}
    assert (await get_all(dbus_client, EFF))["Degraded"] == ""


async def test_fast_values_are_coalesced(desktop_router, dbus_client, http):
    router, _ = desktop_router
    recorder = await SignalRecorder(dbus_client).start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(generate(http, router) for _ in range(30)))
    assert all(status == 200 for status, _ in results)
    await router.assert_no_leaks()
    idle = {"QueueDepth": 0, "InFlight": 0, "TotalRequests": 30, "Paused": False}
    # what a client that follows only PropertiesChanged believes, starting from the values it read first
    await recorder.wait_for(lambda: _folded(recorder.changed(ROUT), {**idle, "TotalRequests": 0}) == idle)
    elapsed = loop.time() - started
    routing_signals = recorder.changed(ROUT)
    # 30 requests change in-flight and the queue ~100 times; at most ~4 announcements a second get out
    assert len(routing_signals) <= elapsed / 0.25 + 2, (len(routing_signals), elapsed)
    assert all(changed for changed in routing_signals)  # never an empty PropertiesChanged
    assert await get_all(dbus_client, ROUT) == {"QueueDepth": 0, "InFlight": 0, "TotalRequests": 30, "Paused": False}
    decisions = await call(dbus_client, ROUT, "GetRecentDecisions", "u", [5])
    from dbus_fast import unpack_variants
    rows = unpack_variants(decisions.body[0])
    assert len(rows) == 5 and all(r["model"] == MODEL and r["backend"] in ("npu", "nvidia") for r in rows)
    assert rows[0]["time"] >= rows[-1]["time"]  # newest first


def _folded(changes: list[dict], initial: dict) -> dict:
    state = dict(initial)
    for changed in changes:
        state.update(changed)
    return state


def _last(changes: list[dict], key: str):
    values = [c[key] for c in changes if key in c]
    return values[-1] if values else None


# ---------------------------------------------------------------- holds


async def test_holds_most_efficient_wins_only_the_holder_releases_and_set_mode_cancels(desktop_router, dbus_client,
                                                                                       session_bus):
    router, _ = desktop_router
    recorder = await SignalRecorder(dbus_client).start()
    first = await call(dbus_client, EFF, "HoldMode", "sss", ["performance", "benchmark", "org.example.Bench"])
    second = await call(dbus_client, EFF, "HoldMode", "sss", ["ultra-efficiency", "on a train", "org.example.Save"])
    cookie1, cookie2 = first.body[0], second.body[0]
    efficiency = await get_all(dbus_client, EFF)
    assert efficiency["Mode"] == "balanced" and efficiency["EffectiveMode"] == "ultra-efficiency"
    assert efficiency["Holds"] == [
        {"cookie": cookie1, "mode": "performance", "reason": "benchmark", "app_id": "org.example.Bench"},
        {"cookie": cookie2, "mode": "ultra-efficiency", "reason": "on a train", "app_id": "org.example.Save"}]
    await recorder.wait_for(lambda: len(recorder.of("ModeChanged")) == 2)
    assert recorder.of("ModeChanged")[1][:2] == ["performance", "ultra-efficiency"]

    other = await run_tool("busctl", "--user", "call", NAME, PATH, EFF, "ReleaseMode", "u", str(cookie2), check=False)
    assert other.returncode != 0 and "another connection" in other.stderr
    reply = await call(dbus_client, EFF, "ReleaseMode", "u", [999])
    assert reply.error_name == contract.ERROR_NO_SUCH_HOLD
    from dbus_fast.aio import MessageBus
    stranger = await MessageBus(bus_address=session_bus).connect()
    reply = await call(stranger, EFF, "ReleaseMode", "u", [cookie2])
    stranger.disconnect()
    assert reply.error_name == contract.ERROR_NOT_HOLDER

    reply = await call(dbus_client, EFF, "ReleaseMode", "u", [cookie2])
    assert reply.message_type is MessageType.METHOD_RETURN
    assert (await get_all(dbus_client, EFF))["EffectiveMode"] == "performance"
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "quiet")  # a manual choice cancels every hold
    efficiency = await get_all(dbus_client, EFF)
    assert efficiency["Holds"] == [] and efficiency["EffectiveMode"] == "quiet"
    assert router.router.efficiency.holds == {}


HOLDER = """
import asyncio, sys
from dbus_fast import Message
from dbus_fast.aio import MessageBus

async def main():
    bus = await MessageBus().connect()
    reply = await bus.call(Message(destination="ie.fio.OllamaProxy", path="/ie/fio/OllamaProxy",
                                   interface="ie.fio.OllamaProxy.Efficiency", member="HoldMode", signature="sss",
                                   body=["ultra-efficiency", "rendering", "org.example.Holder"]))
    print(reply.body[0], flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_killed_holder_loses_its_hold(desktop_router, dbus_client):
    router, _ = desktop_router
    holder = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, stdout=asyncio.subprocess.PIPE)
    try:
        cookie = int(await asyncio.wait_for(holder.stdout.readline(), 15))
        efficiency = await get_all(dbus_client, EFF)
        assert efficiency["EffectiveMode"] == "ultra-efficiency"
        assert [h["cookie"] for h in efficiency["Holds"]] == [cookie]
        recorder = await SignalRecorder(dbus_client).start()
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
    await wait_until(lambda: not router.router.efficiency.holds, message="the killed holder's hold to go")
    efficiency = await get_all(dbus_client, EFF)
    assert efficiency["Holds"] == [] and efficiency["EffectiveMode"] == "balanced"
    await recorder.wait_for(lambda: recorder.of("ModeChanged"))
    old, new, reason = recorder.of("ModeChanged")[0]
    assert (old, new) == ("ultra-efficiency", "balanced") and "vanished" in reason


# ---------------------------------------------------------------- routing


async def test_simulate_routing_answers_and_changes_nothing(desktop_router, dbus_client):
    router, _ = desktop_router
    before = (await get_all(dbus_client, ROUT), router.router.state.total_requests,
              len(router.router.state.decisions), dict(router.scheduler.in_flight))
    out = await busctl_json("call", NAME, PATH, ROUT, "SimulateRouting", "a{sv}", "2", "model", "s", MODEL,
                            "power_efficient", "b", "true")
    backend, reason = out["data"]
    assert backend == "npu" and reason
    reply = await call(dbus_client, ROUT, "SimulateRouting", "a{sv}", [{
        "model": Variant("s", MODEL), "priority": Variant("s", "high"), "max_latency_ms": Variant("u", 5000),
        "expected_tokens": Variant("i", 64), "latency_critical": Variant("b", True), "client_id": Variant("s", "t")}])
    assert reply.message_type is MessageType.METHOD_RETURN and reply.body[0] in ("npu", "nvidia")
    reply = await call(dbus_client, ROUT, "SimulateRouting", "a{sv}", [{"model": Variant("s", "nope:1b")}])
    assert reply.body[0] == "" and reply.body[1]  # refused, with the reason
    after = (await get_all(dbus_client, ROUT), router.router.state.total_requests,
             len(router.router.state.decisions), dict(router.scheduler.in_flight))
    assert after == before


@pytest.mark.parametrize("request_", [
    {"model": Variant("i", 3)},
    {"model": Variant("s", MODEL), "latency_critical": Variant("s", "yes")},
    {"model": Variant("s", MODEL), "expected_tokens": Variant("d", 1.5)},
    {"model": Variant("s", MODEL), "colour": Variant("s", "blue")},
    {"model": Variant("s", MODEL), "priority": Variant("s", "urgent")},
    {},
])
async def test_simulate_routing_rejects_bad_arguments(desktop_router, dbus_client, request_):
    reply = await call(dbus_client, ROUT, "SimulateRouting", "a{sv}", [request_])
    assert reply.message_type is MessageType.ERROR and reply.error_name == ErrorType.INVALID_ARGS.value, reply.body


async def test_a_mode_set_over_dbus_decides_where_the_next_request_goes(sims, routers, desktop, http):
    # the sims decode as fast as their config says, so measured estimates agree with the config's
    npu = await sims("npu", [MODEL], loaded=[MODEL], tokens_per_second=20, default_tokens=3)
    gpu = await sims("nvidia", [MODEL], loaded=[MODEL], tokens_per_second=150, default_tokens=3)
    router = await routers([backend_entry(npu, hardware="npu", power_watts=3),
                            backend_entry(gpu, hardware="nvidia", power_watts=250, latency_ms=50,
                                          tokens_per_second=150)])
    await desktop(router)
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "ultra-efficiency")
    status, headers = await generate(http, router)
    assert status == 200 and headers["X-Backend-Used"] == "npu"
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "performance")
    status, headers = await generate(http, router)
    assert status == 200 and headers["X-Backend-Used"] == "nvidia"
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "ultra-efficiency")
    status, headers = await generate(http, router)
    assert status == 200 and headers["X-Backend-Used"] == "npu"


# ---------------------------------------------------------------- backends


async def test_backend_disabled_over_dbus_is_announced_and_avoided(desktop_router, dbus_client, http):
    router, _ = desktop_router
    recorder = await SignalRecorder(dbus_client).start()
    await busctl("call", NAME, PATH, BACK, "SetBackendEnabled", "sb", "nvidia", "false")
    await recorder.wait_for(lambda: recorder.of("BackendStateChanged"))
    backend_id, state = recorder.of("BackendStateChanged")[0]
    assert backend_id == "nvidia" and state["enabled"] is False and state["health"] == "disabled"
    await recorder.wait_for(lambda: recorder.changed(BACK))
    assert [b["enabled"] for b in recorder.changed(BACK)[-1]["Backends"]] == [True, False]
    await busctl("set-property", NAME, PATH, EFF, "Mode", "s", "performance")
    status, headers = await generate(http, router)
    assert headers["X-Backend-Used"] == "npu"
    bad = await busctl("call", NAME, PATH, BACK, "SetBackendEnabled", "sb", "tpu9", "true", check=False)
    assert bad.returncode != 0 and "tpu9" in bad.stderr and "npu, nvidia" in bad.stderr
    reply = await call(dbus_client, BACK, "SetBackendEnabled", "sb", ["tpu9", True])
    assert reply.error_name == contract.ERROR_UNKNOWN_BACKEND


# ---------------------------------------------------------------- thermal and power


@pytest.fixture
async def hot_router(sims, routers, desktop):
    source = FakeGpuSource(gpus=1)
    gpu = await sims("gpu0", [MODEL], loaded=[MODEL])
    cpu = await sims("cpu0", [MODEL], loaded=[MODEL])
    router = await routers(
        [backend_entry(gpu, hardware="nvidia", gpu_index=0, power_watts=200),
         backend_entry(cpu, hardware="cpu", power_watts=30)],
        telemetry_sources=[source], power={"budget_watts": 350, "resume_ratio": 0.9},
        thermal={"pause_celsius": 82, "resume_celsius": 75},
        telemetry={"interval_seconds": 3600, "stale_seconds": 60})
    handle = await desktop(router)
    return router, source, handle


async def test_thermal_trip_warns_and_throttling_edges_signal(hot_router, dbus_client):
    router, source, _ = hot_router
    recorder = await SignalRecorder(dbus_client).start()
    thermal = await get_all(dbus_client, THERM)
    assert thermal["HottestDevice"] == "GPU 0" and thermal["HottestTemperature"] == 50.0
    source.readings[0].update(temperature_c=90.0, throttling=True, throttle_reasons=("hw_thermal_slowdown",))
    await router.router.sampler.sample_once()
    await recorder.wait_for(lambda: recorder.of("ThermalWarning") and recorder.of("ThrottlingStarted"))
    device, celsius, reason = recorder.of("ThermalWarning")[0]
    assert device == "nvidia:0" and celsius == 90.0 and "82" in reason
    assert recorder.of("ThrottlingStarted") == [["nvidia:0", ["hw_thermal_slowdown"]]]
    # the breaker change goes out at once, not on the coalescing timer
    assert any(c.get("Degraded") == "thermal" for c in recorder.changed(EFF))
    backends = (await get_all(dbus_client, BACK))["Backends"]
    assert backends[0]["breaker"] == "thermal" and backends[0]["temperature_celsius"] == 90.0
    devices = (await get_all(dbus_client, THERM))["Devices"]
    assert devices[0]["breaker"] == "thermal" and devices[0]["throttling"] is True
    await recorder.wait_for(lambda: _last(recorder.changed(THERM), "HottestTemperature") == 90.0)

    source.readings[0].update(temperature_c=70.0, throttling=False, throttle_reasons=())
    await router.router.sampler.sample_once()
    await recorder.wait_for(lambda: recorder.of("ThrottlingStopped"))
    assert recorder.of("ThrottlingStopped") == [["nvidia:0"]] and len(recorder.of("ThermalWarning")) == 1
    assert (await get_all(dbus_client, EFF))["Degraded"] == ""


async def test_power_budget_breaker_shows_in_system_state(hot_router, dbus_client):
    router, source, _ = hot_router
    recorder = await SignalRecorder(dbus_client).start()
    source.readings[0]["power_w"] = 400.0
    await router.router.sampler.sample_once()
    await recorder.wait_for(lambda: any(c.get("PowerBreakerOpen") for c in recorder.changed(SYS)))
    system = await get_all(dbus_client, SYS)
    assert system["PowerBreakerOpen"] is True and system["TotalPowerWatts"] == 400.0
    assert system["PowerBudgetWatts"] == 350.0
    assert (await get_all(dbus_client, EFF))["Degraded"] == "power-budget"
    source.readings[0]["power_w"] = 100.0
    await router.router.sampler.sample_once()
    await recorder.wait_for(lambda: _last(recorder.changed(SYS), "PowerBreakerOpen") is False)


# ---------------------------------------------------------------- lifecycle


async def test_a_second_service_cannot_take_the_name(desktop_router, session_bus):
    router, handle = desktop_router
    with pytest.raises(NameTakenError, match=f"already owned on the session bus by {handle.unique_name}"):
        await start_desktop(router.router, session_bus_address=session_bus, notifications=False,
                            system_bus_address="unix:path=/nonexistent")
    assert (await busctl("get-property", NAME, PATH, EFF, "Mode")).stdout.strip() == 's "balanced"'


async def test_stopping_releases_the_name(sims, routers, desktop, dbus_client):
    sim = await sims("npu", [MODEL])
    router = await routers([backend_entry(sim, hardware="npu")])
    handle = await desktop(router)
    await handle.stop()
    reply = await call(dbus_client, "org.freedesktop.DBus", "NameHasOwner", "s", [NAME],
                       destination="org.freedesktop.DBus", path="/org/freedesktop/DBus")
    assert reply.body == [False]
    router.router.control.set_mode("quiet")  # the router goes on without its desktop side


async def test_reload_over_dbus_says_what_happened(desktop_router, dbus_client, tmp_path):
    from ollamaproxy.reload import Reloader

    router, _ = desktop_router
    states = router.registry.states
    path = tmp_path / "config.toml"
    backends = "".join(f'[[backends]]\nid = "{s.id}"\nurl = "{s.config.url}"\nhardware = "{s.config.hardware}"\n'
                       f"power_watts = {s.config.power_watts}\nmax_concurrent = 2\n" for s in states.values())
    path.write_text(backends)
    router.router.reloader = Reloader(router.router, str(path))
    recorder = await SignalRecorder(dbus_client).start()
    ok, summary = (await busctl_json("call", NAME, PATH, ROUT, "Reload"))["data"]
    assert ok is True and "backends.npu.max_concurrent" in summary
    assert router.scheduler.capacity["npu"] == 2
    await wait_until(lambda: recorder.of("Reloaded"), message="the Reloaded signal")
    assert recorder.of("Reloaded")[0] == [True, summary]
    path.write_text(backends.replace("max_concurrent = 2", "max_concurrent = 0", 1))
    ok, summary = (await busctl_json("call", NAME, PATH, ROUT, "Reload"))["data"]
    assert ok is False and "configuration kept" in summary and "max_concurrent = 0" in summary
    assert router.scheduler.capacity["npu"] == 2
