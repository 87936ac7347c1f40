"""Wires the parts (registry, scheduler, proxy app) together and runs them; stops them in reverse."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from aiohttp import web

from ollamaproxy.backends.registry import BackendState, Registry
from ollamaproxy.backends.health import Health
from ollamaproxy.config import Config, ConfigError, default_config, default_config_path, load_config, parse_host_port
from ollamaproxy.policy.efficiency import EfficiencyPolicy, default_auto_inputs
from ollamaproxy.proxy.app import ProxyState, create_proxy_app
from ollamaproxy.requestlog import RequestLog
from ollamaproxy.routing.estimates import Estimates
from ollamaproxy.routing.planner import Planner
from ollamaproxy.routing.scheduler import Scheduler

log = logging.getLogger("ollamaproxy.service")


class Router:
    """One running router: backend registry, scheduler and the client-facing HTTP listener."""

    def __init__(self, config: Config, *, request_log: RequestLog | None = None):
        self.config = config
        self.registry = Registry(config)
        queue = config.queue
        self.scheduler = Scheduler(
            {b.id: b.max_concurrent for b in config.backends},
            max_queue_depth=queue.max_depth,
            queue_timeout=queue.timeout_seconds,
            aging_seconds=queue.aging_seconds,
            fair_quantum_seconds=queue.fair_quantum_seconds,
            reorder_window=queue.reorder_window,
            is_available=lambda backend_id: self.registry.states[backend_id].available(self.registry.clock()),
            is_loaded=self.registry.is_loaded,
            clock=self.registry.clock,
        )
        self.registry.add_listener(self._backend_changed)
        quiet = config.efficiency.quiet_hours
        self.efficiency = EfficiencyPolicy(
            config.efficiency.default_mode,
            auto_inputs=default_auto_inputs((quiet[0], quiet[1]) if quiet else None),
            battery_hysteresis_percent=config.efficiency.battery_hysteresis_percent,
        )
        self.estimates = Estimates()
        self.planner = Planner(self.registry, self.scheduler, self.estimates, self.efficiency)
        self.state = ProxyState(config, self.registry, self.scheduler, self.planner, self.estimates,
                                request_log or RequestLog())
        self.app = create_proxy_app(self.state)
        self._runner: web.AppRunner | None = None
        self.addresses: list = []

    def _backend_changed(self, state: BackendState, previous: Health) -> None:
        self.scheduler.wake(state.id)

    def set_mode(self, mode: str, reason: str = "user"):
        """Run-time mode change (the D-Bus and management layers call this); applies to the next decision."""
        return self.efficiency.set_mode(mode, reason)

    def explain(self, description: dict) -> dict:
        """The scheduler's decision for a described request, without side effects."""
        return self.planner.explain(description)

    async def start(self, *, host: str | None = None, port: int | None = None, probe: bool = True) -> None:
        """Probe backends once, then listen (port 0 picks a free port; see `url`)."""
        listen_host, listen_port = parse_host_port(self.config.server.listen)
        host = listen_host if host is None else host
        port = listen_port if port is None else port
        await self.registry.start(probe=probe)
        try:
            self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, port, reuse_address=True)
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.addresses = list(self._runner.addresses)

    @property
    def url(self) -> str:
        host, port = self.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop listening first, then close backend sessions; keeps going past individual failures."""
        errors = []
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


async def serve(config: Config, origin: str) -> None:
    router = Router(config)
    backends = ", ".join(f"{b.id}={b.url}" for b in config.backends)
    log.info(json.dumps({"event": "starting", "config": origin, "listen": config.server.listen,
                         "backends": backends}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await router.start()
        log.info(json.dumps({"event": "listening", "url": router.url}))
        await stop.wait()
        log.info(json.dumps({"event": "stopping"}))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await router.stop()


__all__ = ["Router", "resolve_config", "serve", "ConfigError"]
