"""UPower on a private system bus (python-dbusmock): Auto follows plug, unplug and battery; manual modes stay put."""

import logging

import pytest

from desktop_fixtures import *  # noqa: F403
from desktop_fixtures import MODEL, SignalRecorder, UPowerMock, get_all, wait_until
from conftest import backend_entry
from ollamaproxy.desktop import contract
from ollamaproxy.desktop.upower import power_state
from ollamaproxy.power_source import PowerSourceState

CHARGING, DISCHARGING, FULL = 1, 2, 4
WARNING_NONE, WARNING_LOW, WARNING_CRITICAL = 1, 3, 4
DEADLINE = 1.0  # an unplug must change the effective mode within a second


@pytest.fixture
async def laptop(sims, routers, desktop, system_bus):
    """Factory: a router in `mode` (quiet hours off: the clock does not decide) with its desktop side on the buses."""

    async def make(mode: str = "auto"):
        npu = await sims("npu", [MODEL], loaded=[MODEL])
        gpu = await sims("nvidia", [MODEL], loaded=[MODEL])
        router = await routers([backend_entry(npu, hardware="npu", power_watts=3),
                                backend_entry(gpu, hardware="nvidia", power_watts=250)],
                               efficiency={"default_mode": mode, "quiet_hours": []})
        handle = await desktop(router, system_bus_address=system_bus)
        return router.router, handle

    return make


def effective(router) -> str:
    return router.control.effective_mode()


async def test_auto_follows_unplug_low_battery_and_plug(upower_mock, laptop, dbus_client):
    await upower_mock.battery(35.0, CHARGING)
    router, _ = await laptop("auto")
    await wait_until(lambda: router.power_source.current.percent == 35.0, message="UPower's first reading")
    assert router.power_source.upower_attached and router.power_source.current.source == "upower"
    assert effective(router) == "balanced"  # on AC, whatever the level
    recorder = await SignalRecorder(dbus_client).start()

    await upower_mock.on_battery(True)
    await wait_until(lambda: effective(router) == "efficiency", timeout=DEADLINE, message="unplug -> efficiency")
    await recorder.wait_for(lambda: recorder.of("ModeChanged"))
    assert recorder.of("ModeChanged")[0] == ["balanced", "efficiency", "power-source"]
    system = await get_all(dbus_client, contract.SYSTEM_STATE)
    assert system["OnBattery"] is True and system["PowerSource"] == "battery" and system["BatteryPercent"] == 35.0
    assert "on-battery" in (await get_all(dbus_client, contract.EFFICIENCY))["Degraded"]
    assert (await get_all(dbus_client, contract.EFFICIENCY))["Mode"] == "auto"

    await upower_mock.battery(12.0, DISCHARGING, WARNING_LOW)  # a low battery goes further
    await wait_until(lambda: effective(router) == "ultra-efficiency", timeout=DEADLINE,
                     message="low battery -> ultra-efficiency")
    assert router.power_source.current.warning_level == "low"
    assert router.power_source.current.state == "discharging"

    await upower_mock.on_battery(False)  # plugged back in
    await wait_until(lambda: effective(router) == "balanced", timeout=DEADLINE, message="plug -> balanced")
    await recorder.wait_for(lambda: any(c.get("PowerSource") == "ac" for c in recorder.changed(contract.SYSTEM_STATE)))
    assert "on-battery" not in (await get_all(dbus_client, contract.EFFICIENCY))["Degraded"]


async def test_a_manual_choice_survives_plug_events(upower_mock, laptop):
    router, _ = await laptop("performance")
    await wait_until(lambda: router.power_source.upower_attached, message="UPower attached")
    await upower_mock.battery(9.0, DISCHARGING, WARNING_CRITICAL)
    await upower_mock.on_battery(True)
    await wait_until(lambda: router.power_source.current.on_battery is True and
                     router.power_source.current.percent == 9.0, message="unplugged at 9 %")
    assert effective(router) == "performance"
    await upower_mock.on_battery(False)
    await wait_until(lambda: router.power_source.current.on_battery is False, message="plugged")
    assert effective(router) == "performance" and router.control.mode() == "performance"
    router.control.set_mode("auto")  # the user hands over to Auto: it is on AC now
    assert effective(router) == "balanced"


async def test_upower_absent_then_appearing_then_restarting(system_bus, laptop, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ollamaproxy.desktop.upower")
    router, _ = await laptop("auto")
    assert not router.power_source.upower_attached
    absent = [r for r in caplog.records if "UPower is not running" in r.getMessage()]
    assert len(absent) == 1 and absent[0].levelno == logging.WARNING
    # without UPower the fallback (sysfs) readings count
    router.power_source.update(PowerSourceState(True, 30.0, "discharging", "unknown", "sysfs"))
    assert router.power_source.current.source == "sysfs" and effective(router) == "efficiency"

    mock = UPowerMock("upower", '{"OnBattery": false}', True, system_bus, tmp_path / "upower.log")
    await mock.start()
    try:
        await wait_until(lambda: router.power_source.upower_attached, message="UPower to be followed when it appears")
        await wait_until(lambda: router.power_source.current.source == "upower", message="UPower's reading")
        assert effective(router) == "balanced"  # UPower says AC
        router.power_source.update(PowerSourceState(True, 5.0, "discharging", "unknown", "sysfs"))
        assert router.power_source.current.on_battery is False  # fallback readings are masked while UPower lives
        await mock.battery(50.0, DISCHARGING)
        await mock.on_battery(True)
        await wait_until(lambda: router.power_source.current.percent == 50.0 and router.power_source.current.on_battery,
                         message="a change by signal")

        await mock.stop()  # UPower restarts: gone for a moment ...
        await wait_until(lambda: not router.power_source.upower_attached, message="UPower's departure noticed")
        router.power_source.update(PowerSourceState(True, 20.0, "discharging", "unknown", "sysfs"))
        assert router.power_source.current.source == "sysfs"
        await mock.start()  # ... and back, with fresh values
        await wait_until(lambda: router.power_source.upower_attached and
                         router.power_source.current.source == "upower", message="UPower followed again")
        assert router.power_source.current.on_battery is False
        await mock.on_battery(True)
        await wait_until(lambda: router.power_source.current.on_battery is True, message="signals after the restart")
    finally:
        await mock.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.endswith("upower")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # absence is logged once, not on every restart


def test_display_device_values_map_to_the_power_source_state():
    assert power_state({"OnBattery": True, "IsPresent": True, "Percentage": 42.0, "State": 2, "WarningLevel": 3}) == \
        PowerSourceState(True, 42.0, "discharging", "low", "upower")
    # a desktop: UPower runs, no battery
    assert power_state({"OnBattery": False, "IsPresent": False, "Percentage": 0.0, "State": 0, "WarningLevel": 1}) == \
        PowerSourceState(False, None, "unknown", "none", "upower")
    assert power_state({"OnBattery": False, "IsPresent": True, "Percentage": 100.0, "State": 4}).state == "full"



async def test_unplugging_on_a_low_battery_moves_the_next_request_to_the_npu(upower_mock, sims, routers, desktop,
                                                                              system_bus, http):
    """The whole chain: UPower signal → power source → Auto → scoring → where a real HTTP request lands."""
    npu = await sims("npu", [MODEL], loaded=[MODEL])
    gpu = await sims("nvidia", [MODEL], loaded=[MODEL])
    handle = await routers([backend_entry(npu, hardware="npu", power_watts=3),
                            backend_entry(gpu, hardware="nvidia", power_watts=30, latency_ms=50,
                                          tokens_per_second=150)],
                           efficiency={"default_mode": "auto", "quiet_hours": []})
    await upower_mock.battery(12.0, CHARGING)
    await desktop(handle, system_bus_address=system_bus)
    router = handle.router
    await wait_until(lambda: router.power_source.current.percent == 12.0, message="UPower's first reading")

    async def lands_on() -> str:
        async with http.post(handle.url + "/api/generate",
                             json={"model": MODEL, "prompt": "hi", "stream": False}) as resp:
            assert resp.status == 200
            return resp.headers["X-Backend-Used"]

    assert await lands_on() == "nvidia"  # on AC: balanced, and the laptop dGPU wins on latency
    await upower_mock.on_battery(True)
    await upower_mock.battery(12.0, DISCHARGING, WARNING_LOW)
    await wait_until(lambda: effective(router) == "ultra-efficiency", timeout=DEADLINE,
                     message="unplugged at 12 % -> ultra-efficiency")
    assert await lands_on() == "npu"
    assert gpu.stats.requests == 1
