"""Wires the parts (registry, scheduler, proxy app) together and runs them; stops them in reverse."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from pathlib import Path

from aiohttp import web

from ollamaproxy.backends.registry import BackendState, Registry
from ollamaproxy.backends.health import Health
from ollamaproxy.config import Config, ConfigError, default_config, default_config_path, load_config, parse_host_port
from ollamaproxy.control import Control
from ollamaproxy.modes import AutoInputs
from ollamaproxy.policy.efficiency import EfficiencyPolicy, PolicyEvent
from ollamaproxy.power_source import PowerSource, PowerSourceState
from ollamaproxy.proxy.app import ProxyState, create_proxy_app
from ollamaproxy.requestlog import RequestLog
from ollamaproxy.routing.estimates import Estimates
from ollamaproxy.routing.planner import Planner
from ollamaproxy.routing.scheduler import Scheduler
from ollamaproxy.safety import Safety
from ollamaproxy.statefile import StateFile
from ollamaproxy.tasks import cancel_and_wait

log = logging.getLogger("ollamaproxy.service")


class Router:
    """One running router: backend registry, scheduler and the client-facing HTTP listener."""

    def __init__(self, config: Config, *, request_log: RequestLog | None = None, telemetry_sources=None,
                 initial_mode: str | None = None):
        self.config = config
        self.registry = Registry(config)
        self.safety = Safety(config, clock=self.registry.clock)
        queue = config.queue
        self.scheduler = Scheduler(
            {b.id: b.max_concurrent for b in config.backends},
            max_queue_depth=queue.max_depth,
            queue_timeout=queue.timeout_seconds,
            aging_seconds=queue.aging_seconds,
            fair_quantum_seconds=queue.fair_quantum_seconds,
            reorder_window=queue.reorder_window,
            is_available=self._may_start,
            is_loaded=self.registry.is_loaded,
            clock=self.registry.clock,
        )
        self.registry.add_listener(self._backend_changed)
        self.power_source = PowerSource()
        quiet = config.efficiency.quiet_hours
        self._quiet_hours = (quiet[0], quiet[1]) if quiet else None
        self.efficiency = EfficiencyPolicy(
            initial_mode or config.efficiency.default_mode,
            auto_inputs=self._auto_inputs,
            battery_hysteresis_percent=config.efficiency.battery_hysteresis_percent,
        )
        self.estimates = Estimates()
        self.planner = Planner(self.registry, self.scheduler, self.estimates, self.efficiency, self.safety)
        self.safety.add_listener(self._breaker_changed)
        self.sampler = None
        if config.telemetry.enabled:
            from ollamaproxy.hardware.sampler import Sampler, default_sources

            telemetry = config.telemetry
            sources = telemetry_sources if telemetry_sources is not None else default_sources(
                telemetry.sysfs_root, nvidia_smi=telemetry.nvidia_smi)
            self.sampler = Sampler(sources, interval=telemetry.interval_seconds,
                                   read_timeout=telemetry.read_timeout_seconds, clock=self.registry.clock,
                                   on_snapshot=self._on_snapshot)
        self._tasks: list[asyncio.Task] = []
        self.state = ProxyState(config, self.registry, self.scheduler, self.planner, self.estimates,
                                request_log or RequestLog())
        self.control = Control(self)
        self.power_source.add_listener(self._power_source_changed)
        self.efficiency.add_listener(self._policy_changed)
        self.scheduler.on_change = self._load_changed
        self.app = create_proxy_app(self.state)
        self._runner: web.AppRunner | None = None
        self.addresses: list = []
        self.on_user_mode_changed = None  # the service persists the user's choice through this
        self.hotplug = None
        self._grpc = None
        self.reloader = None  # set by serve(): D-Bus Reload and the management API use it

    def _may_start(self, backend_id: str) -> bool:
        """New work may start on a backend: it is healthy and no breaker holds it."""
        return (self.registry.states[backend_id].available(self.registry.clock())
                and self.safety.blocked(backend_id) is None)

    def _auto_inputs(self) -> AutoInputs:
        """What Auto resolves from: the power source, the thermal breakers, the local hour."""
        power = self.power_source.current
        hot = any(t.open for t in self.safety.board.thermal.values())
        return AutoInputs(on_battery=power.on_battery, battery_percent=power.percent,
                          thermal="hot" if hot else "normal", hour=time.localtime().tm_hour,
                          quiet_hours=self._quiet_hours)

    def _on_snapshot(self, snapshot) -> None:
        self.safety.on_snapshot(snapshot)
        battery = getattr(snapshot, "battery", None)
        if battery is not None and battery.present:
            self.power_source.update(PowerSourceState(battery.on_battery, battery.percent, battery.state,
                                                      "unknown", battery.source))
        self.control.publish("thermal", {})
        self.control.publish("system", {})

    def _load_changed(self, backend_id: str) -> None:
        self.control.publish("routing", {})
        if backend_id:
            self.control.publish("backends", {"id": backend_id})

    def _backend_changed(self, state: BackendState, previous: Health) -> None:
        self.scheduler.wake(state.id)
        self.control.publish("backends", {"id": state.id})
        self.control.publish("efficiency", {})

    def _breaker_changed(self, transition) -> None:
        if not transition.opened:
            self.scheduler.wake_all()  # held requests start now, in queue (priority) order
        if transition.breaker == "thermal":
            self.efficiency.refresh("thermal")
        self.control.publish("breaker", {"transition": transition})
        for topic in ("efficiency", "routing", "thermal", "system"):
            self.control.publish(topic, {})
        for backend_id, devices in self.safety.backend_devices.items():
            if transition.subject in ("global", backend_id) or transition.subject in devices:
                self.control.publish("backends", {"id": backend_id})

    def _power_source_changed(self, old: PowerSourceState, new: PowerSourceState) -> None:
        self.efficiency.refresh("power-source")
        self.control.publish("system", {"old": old, "new": new})
        self.control.publish("efficiency", {})

    def _policy_changed(self, event: PolicyEvent) -> None:
        if event.kind == "effective":
            log.info(json.dumps({"event": "mode_changed", "from": event.old, "to": event.new, "reason": event.reason}))
            self.control.publish("mode-changed", {"old": event.old, "new": event.new, "reason": event.reason})
        self.control.publish("efficiency", {})

    async def _refresh_time_of_day(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.efficiency.refresh("time-of-day")

    def _watch_hotplug(self) -> None:
        """Follow udev add/remove events so an unplugged eGPU stops taking work at once."""
        try:
            from ollamaproxy.hardware.discovery import HotplugWatcher

            self.hotplug = HotplugWatcher(self.safety.device_event)
            self.hotplug.start()
        except Exception as error:  # noqa: BLE001 - no udev (containers, CI): telemetry still works
            self.hotplug = None
            log.info(json.dumps({"event": "hotplug_unavailable", "reason": str(error)[:200]}))

    async def _tick_safety(self) -> None:
        interval = self.config.telemetry.interval_seconds
        while True:
            await asyncio.sleep(interval)
            self.safety.tick()

    def apply_config(self, new: Config) -> None:
        """Take over the parts of a new config that can change while running (see reload.py).

        Backends keep their identity (id, kind, url); their limits, pins and estimates change at
        once, and waiting requests are re-offered to the slots that appeared.
        """
        old_backends = {b.id: b for b in self.config.backends}
        for backend in new.backends:
            state = self.registry.states.get(backend.id)
            if state is None or old_backends[backend.id].url != backend.url:
                continue
            state.config = backend
            if state.enabled != backend.enabled:
                self.registry.set_enabled(backend.id, backend.enabled)
            self.scheduler.capacity[backend.id] = backend.max_concurrent
        queue = new.queue
        self.scheduler.max_queue_depth = queue.max_depth
        self.scheduler.queue_timeout = queue.timeout_seconds
        self.scheduler.reorder_window = queue.reorder_window
        self.scheduler.queue.aging_seconds = queue.aging_seconds
        self.scheduler.queue.quantum = queue.fair_quantum_seconds
        self.safety.apply_config(new)
        quiet = new.efficiency.quiet_hours
        self._quiet_hours = (quiet[0], quiet[1]) if quiet else None
        self.efficiency.hysteresis = new.efficiency.battery_hysteresis_percent
        self.config = self.registry.config = self.state.config = new
        self.efficiency.refresh("config-reloaded")
        self.scheduler.wake_all()
        for topic in ("efficiency", "backends", "routing", "system"):
            self.control.publish(topic, {})

    def set_mode(self, mode: str, reason: str = "user"):
        """Run-time mode change (the D-Bus and management layers call this); applies to the next decision."""
        event = self.efficiency.set_mode(mode, reason)
        if self.on_user_mode_changed is not None and event is not None:
            self.on_user_mode_changed(self.efficiency.user_mode.value)
        return event

    def explain(self, description: dict) -> dict:
        """The scheduler's decision for a described request, without side effects."""
        return self.planner.explain(description)

    async def start(self, *, host: str | None = None, port: int | None = None, probe: bool = True) -> None:
        """Probe backends once, then listen (port 0 picks a free port; see `url`)."""
        listen_host, listen_port = parse_host_port(self.config.server.listen)
        host = listen_host if host is None else host
        port = listen_port if port is None else port
        await self.registry.start(probe=probe)
        if self.sampler is not None:
            self._watch_hotplug()
            await self.sampler.sample_once()
            self._tasks.append(asyncio.create_task(self.sampler.run(), name="telemetry-sampler"))
            self._tasks.append(asyncio.create_task(self._tick_safety(), name="stale-telemetry-watch"))
        self._tasks.append(asyncio.create_task(self._refresh_time_of_day(), name="quiet-hours-clock"))
        try:
            self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port, reuse_address=True)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.addresses = list(self._runner.addresses)
        if self.config.grpc.enabled:
            try:
                from ollamaproxy.frontdoors.grpc_server import start_grpc
            except ImportError:
                await self.stop()
                raise ConfigError("[grpc]", ["grpc.enabled = true needs the gRPC extra: "
                                             "pip install 'ollamaproxy[grpc]'"]) from None
            try:
                self._grpc = await start_grpc(self, self.config.grpc.listen,
                                              allow_remote=self.config.grpc.allow_remote)
            except BaseException:
                await self.stop()
                raise

    @property
    def url(self) -> str:
        host, port = self.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening first, then close backend sessions; keeps going past individual failures."""
        errors = []
        if self._grpc is not None:
            try:
                await self._grpc.stop()
            except Exception as error:  # noqa: BLE001
                errors.append(error)
            self._grpc = None
        if self.hotplug is not None:
            self.hotplug.stop()
            self.hotplug = None
        errors += await cancel_and_wait(self._tasks)
        if self._runner is not None:
            try:
                await self._runner.cleanup()
            except Exception as error:  # noqa: BLE001 - keep closing the rest, report below
                errors.append(error)
            self._runner = None
        try:
            await self.registry.close()
        except Exception as error:  # noqa: BLE001
            errors.append(error)
        self.state.request_log.flush()
        if errors:
            raise ExceptionGroup("errors while stopping the router", errors)


def resolve_config(path: str | None) -> tuple[Config, str]:
    """Load the config from `path` or the default location; without any file use the defaults."""
    if path is not None:
        return load_config(Path(path)), f"config {path}"
    default_path = default_config_path()
    if default_path.exists():
        return load_config(default_path), f"config {default_path}"
    return default_config(), f"no config file at {default_path}: using defaults"


async def serve(config: Config, origin: str, *, config_path: str | None = None,
                state_file: StateFile | None = None) -> None:
    """Run the router, its management API, request log and D-Bus face until SIGINT/SIGTERM; SIGHUP reloads."""
    from ollamaproxy.management import start_management
    from ollamaproxy.metrics import Metrics
    from ollamaproxy.reload import Reloader
    from ollamaproxy.requestdb import RequestDb

    backends = ", ".join(f"{b.id}={b.url}" for b in config.backends)
    log.info(json.dumps({"event": "starting", "config": origin, "listen": config.server.listen,
                         "backends": backends}))
    state_file = state_file or StateFile()
    saved_mode = state_file.load_mode()
    metrics = Metrics()
    request_log = RequestLog()
    request_log.add_sink(metrics.observe)
    router = Router(config, initial_mode=saved_mode, request_log=request_log)
    router.on_user_mode_changed = state_file.save_mode
    if saved_mode:
        log.info(json.dumps({"event": "mode_restored", "mode": saved_mode}))
    reloader = Reloader(router, config_path)
    router.reloader = reloader
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload_logged)
    request_db = management = desktop = None
    try:
        if config.request_log.enabled:
            request_db = RequestDb(config.request_log.path or None, retention_days=config.request_log.retention_days,
                                   max_rows=config.request_log.max_rows,
                                   power_of=lambda backend_id: router.safety.backend_live(backend_id)[0])
            await request_db.start()
            request_log.add_sink(request_db.submit)
        await router.start()
        log.info(json.dumps({"event": "listening", "url": router.url}))
        if config.server.management:
            management = await start_management(router.control, config.server.management, request_db=request_db,
                                                reload=reloader.reload, metrics=metrics)
            log.info(json.dumps({"event": "management_listening", "listen": config.server.management}))
        desktop = await _start_desktop(router)
        await stop.wait()
        log.info(json.dumps({"event": "stopping"}))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        if management is not None:
            await management.cleanup()
        if desktop is not None:
            await desktop.stop()
        await router.stop()
        if request_db is not None:
            await request_db.stop()


async def _start_desktop(router: Router):
    """Join the session bus (D-Bus service, UPower, notifications); without a session bus, say so and go on."""
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and not os.path.exists(
            f"/run/user/{os.getuid()}/bus"):
        log.warning(json.dumps({"event": "dbus_unavailable",
                                "reason": "no session bus (DBUS_SESSION_BUS_ADDRESS unset): D-Bus interface off"}))
        return None
    from ollamaproxy.desktop.service import DesktopError, NameTakenError, start_desktop

    try:
        return await start_desktop(router, notifications=router.config.desktop.notifications)
    except NameTakenError:
        raise  # another ollamaproxy owns ie.fio.OllamaProxy: running a second one would only confuse
    except DesktopError as error:
        log.warning(json.dumps({"event": "dbus_unavailable", "reason": str(error)}))
        return None


__all__ = ["Router", "resolve_config", "serve", "ConfigError"]
