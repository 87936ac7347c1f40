"""Desktop notifications through python-dbusmock's notification daemon: thermal trips, power budget, backends, Auto."""

import logging
from types import SimpleNamespace

import pytest

from desktop_fixtures import *  # noqa: F403
from desktop_fixtures import MODEL, FakeGpuSource, wait_until
from conftest import backend_entry
from ollamaproxy.desktop.notify import CRITICAL, LOW, NORMAL, Note, Notifier
from ollamaproxy.desktop.service import notifications_enabled

APP, REPLACES, ICON, SUMMARY, BODY, ACTIONS, HINTS, TIMEOUT = range(8)


@pytest.fixture
async def watched(sims, routers, desktop):
    """A GPU backend with hand-driven telemetry and a CPU backend with fast health probes; notifications on."""
    source = FakeGpuSource(gpus=1)
    gpu = await sims("gpu0", [MODEL], loaded=[MODEL])
    cpu = await sims("cpu0", [MODEL], loaded=[MODEL])
    router = await routers(
        [backend_entry(gpu, hardware="nvidia", gpu_index=0, power_watts=200),
         backend_entry(cpu, hardware="cpu", power_watts=30)],
        telemetry_sources=[source], power={"budget_watts": 350, "resume_ratio": 0.9},
        thermal={"pause_celsius": 82, "resume_celsius": 75},
        telemetry={"interval_seconds": 3600, "stale_seconds": 60},
        health={"interval_seconds": 0.05, "max_backoff_seconds": 0.2})
    handle = await desktop(router, notifications=True)
    return SimpleNamespace(router=router.router, source=source, handle=handle, cpu=cpu)


async def sample(setup) -> None:
    await setup.router.sampler.sample_once()
    await setup.handle.notifier.drained()


async def test_thermal_trip_notifies_once_critically_and_its_recovery_replaces_it(notification_mock, watched):
    watched.source.readings[0]["temperature_c"] = 90.0
    await sample(watched)
    watched.source.readings[0]["temperature_c"] = 88.0  # still hot: nothing new to say
    await sample(watched)
    sent = await notification_mock.notifications()
    assert len(sent) == 1
    trip = sent[0]
    assert trip[APP] == "ollamaproxy" and trip[REPLACES] == 0
    assert trip[SUMMARY] == "GPU 0 is too hot" and "90" in trip[BODY]
    assert trip[HINTS]["urgency"] == CRITICAL

    watched.source.readings[0]["temperature_c"] = 70.0
    await sample(watched)
    sent = await notification_mock.notifications()
    assert len(sent) == 2
    recovery = sent[1]
    assert recovery[REPLACES] == 1  # the id the daemon gave the trip notification
    assert recovery[SUMMARY] == "GPU 0 has cooled down" and recovery[HINTS]["urgency"] == LOW


async def test_power_budget_breaker_opens_and_closes(notification_mock, watched):
    watched.source.readings[0]["power_w"] = 400.0
    await sample(watched)
    watched.source.readings[0]["power_w"] = 100.0
    await sample(watched)
    sent = await notification_mock.notifications()
    assert [(n[SUMMARY], n[HINTS]["urgency"], n[REPLACES]) for n in sent] == [
        ("AI requests held: power budget reached", NORMAL, 0),
        ("Power draw back within budget", LOW, 1)]


async def test_a_backend_going_down_and_coming_back(notification_mock, watched):
    watched.cpu.behaviour.health_status = 500
    await wait_until(lambda: watched.router.control.backend("cpu0")["health"] == "down", message="cpu0 down")
    await watched.handle.notifier.drained()
    watched.cpu.behaviour.health_status = None
    await wait_until(lambda: watched.router.control.backend("cpu0")["health"] == "healthy", message="cpu0 back")
    await watched.handle.notifier.drained()
    sent = await notification_mock.notifications()
    assert [(n[SUMMARY], n[HINTS]["urgency"]) for n in sent] == [
        ("AI backend cpu0 is down", NORMAL), ("AI backend cpu0 is back", LOW)]
    assert "HTTP 500" in sent[0][BODY] and sent[1][REPLACES] == 1


async def test_auto_switching_on_the_power_source_notifies(notification_mock, upower_mock, sims, routers, desktop,
                                                           system_bus):
    npu = await sims("npu", [MODEL], loaded=[MODEL])
    router = await routers([backend_entry(npu, hardware="npu")],
                           efficiency={"default_mode": "auto", "quiet_hours": []})
    handle = await desktop(router, notifications=True, system_bus_address=system_bus)
    await upower_mock.battery(30.0, 2)
    await upower_mock.on_battery(True)
    await wait_until(lambda: router.router.control.effective_mode() == "efficiency", message="auto -> efficiency")
    await handle.notifier.drained()
    router.router.control.set_mode("quiet")  # a manual change is the user's own doing: no notification
    await handle.notifier.drained()
    sent = await notification_mock.notifications()
    assert [(n[SUMMARY], n[HINTS]["urgency"]) for n in sent] == [("AI efficiency: Efficiency", NORMAL)]
    assert "30" in sent[0][BODY]


async def test_without_a_notification_daemon_it_logs_once_and_carries_on(watched, caplog):
    caplog.set_level(logging.DEBUG, logger="ollamaproxy.desktop.notify")
    for temperature in (90.0, 70.0, 95.0):
        watched.source.readings[0]["temperature_c"] = temperature
        await sample(watched)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("ollamaproxy.desktop")]
    assert len(warnings) == 1 and "cannot show desktop notifications" in warnings[0].getMessage()
    assert watched.router.control.degraded() == "thermal"  # the router carried on


async def test_a_subject_is_rate_limited_but_a_recovery_of_what_is_shown_is_not(notification_mock, dbus_client,
                                                                               routers, sims):
    sim = await sims("npu", [MODEL])
    router = await routers([backend_entry(sim, hardware="npu")])
    notifier = Notifier(router.router.control, dbus_client, min_interval=1.0)
    await notifier.start()
    try:
        problem = Note("thermal:x", "hot", "", CRITICAL, "", problem=True)
        recovery = Note("thermal:x", "cool", "", LOW, "", problem=False)
        notifier.offer(problem)
        notifier.offer(recovery)           # the recovery of a problem on screen goes out at once
        notifier.offer(problem)            # too soon after the last one: held back ...
        notifier.offer(recovery)           # ... and it ended before it was shown: nothing to say
        await notifier.drained()
        assert [n.summary for n in notifier.sent] == ["hot", "cool"]
        notifier.offer(problem)            # held back, then shown when the interval is over
        notifier.offer(Note("thermal:x", "hotter", "", CRITICAL, "", problem=True))  # latest news only
        await notifier.drained()
        assert len(notifier.sent) == 2
        await wait_until(lambda: len(notifier.sent) == 3, timeout=5, message="the held-back notification")
        assert notifier.sent[-1].summary == "hotter"
        notifier.offer(Note("power-budget", "power", "", NORMAL, "", problem=True))  # other subjects are not held
        await wait_until(lambda: len(notifier.sent) == 4, timeout=5, message="another subject's notification")
    finally:
        await notifier.stop()
    sent = await notification_mock.notifications()
    assert [n[REPLACES] for n in sent] == [0, 1, 1, 0]


def test_notifications_can_be_switched_off_in_config():
    def router(**desktop):
        return SimpleNamespace(config=SimpleNamespace(desktop=SimpleNamespace(**desktop)) if desktop
                               else SimpleNamespace())

    assert notifications_enabled(router(), True)
    assert notifications_enabled(router(notifications=True), True)
    assert not notifications_enabled(router(notifications=False), True)
    assert not notifications_enabled(router(notifications=True), False)
