"""Shared fixtures: simulated backends and routers on loopback, and polling-with-deadline helpers."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from ollamaproxy.config import parse_config
from ollamaproxy.requestlog import RequestLog
from ollamaproxy.service import Router
from llamacpp_server import DEFAULT_ALIAS, start_server
from ollamaproxy.sim import SIM_BEHAVIOUR, SIM_STATS, SimBehaviour, SimStats, create_sim_app

# ---------------------------------------------------------------- waiting without sleeping as sync


async def wait_until(predicate, timeout: float = 10.0, message: str = "condition") -> None:
    """Poll `predicate` until true (assert_eventually); fails loudly at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.002)


async def wait_for_http(url: str, timeout: float = 20.0) -> None:
    """Poll `url` until it answers 200 (a process finished starting), failing at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout}s")
            await asyncio.sleep(0.01)


# ---------------------------------------------------------------- simulated backends


@dataclass
class SimHandle:
    name: str
    app: web.Application
    runner: web.AppRunner
    url: str

    @property
    def behaviour(self) -> SimBehaviour:
        return self.app[SIM_BEHAVIOUR]

    @property
    def stats(self) -> SimStats:
        return self.app[SIM_STATS]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        await self.runner.cleanup()


async def _serve_app(app: web.Application, port: int = 0) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host, bound = runner.addresses[0][:2]
    return runner, f"http://{host}:{bound}"


@pytest.fixture
async def sims():
    """Factory: `await sims("name", ["model"], tokens_per_second=0)` starts a simulator on loopback."""
    started: list[SimHandle] = []

    async def start(name: str, models: list[str], *, port: int = 0, **kw) -> SimHandle:
        kw.setdefault("tokens_per_second", 0)
        app = create_sim_app(name, models, **kw)
        runner, url = await _serve_app(app, port)
        handle = SimHandle(name, app, runner, url)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        behaviour = handle.behaviour
        if behaviour.hold is not None:
            behaviour.hold.set()
        await handle.stop()


@pytest.fixture
async def raw_backends():
    """Factory: serve a hand-written aiohttp app as a backend (for stream-shape tests)."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner, url = await _serve_app(app)
        runners.append(runner)
        return url

    yield start
    for runner in runners:
        await runner.cleanup()


# ---------------------------------------------------------------- routers


class RouterHandle:
    def __init__(self, router: Router, log: io.StringIO):
        self.router = router
        self.log_buffer = log

    @property
    def url(self) -> str:
        return self.router.url

    @property
    def scheduler(self):
        return self.router.scheduler

    @property
    def registry(self):
        return self.router.registry

    def log_lines(self) -> list[dict]:
        self.router.state.request_log.flush()  # records are written in batches, off the hot path
        return [json.loads(line) for line in self.log_buffer.getvalue().splitlines() if line]

    def idle(self) -> bool:
        return self.scheduler.queue_depth == 0 and all(v == 0 for v in self.scheduler.in_flight.values())

    async def assert_no_leaks(self) -> None:
        await wait_until(self.idle, message=f"slots and queue to drain: in_flight={self.scheduler.in_flight} "
                                            f"queued={self.scheduler.queue_depth}")


def backend_entry(sim: SimHandle | str, ident: str | None = None, **fields) -> dict:
    url = sim if isinstance(sim, str) else sim.url
    entry = {"id": ident or (sim.name if isinstance(sim, SimHandle) else "backend"), "url": url}
    entry.update(fields)
    return entry


@pytest.fixture
async def routers():
    """Factory: `await routers([backend_entry(sim), ...], queue={...})` starts a router on a free port.

    At teardown every router must be idle: no slot held and nothing queued (no leaks, ever).
    """
    handles: list[RouterHandle] = []

    async def make(backends: list[dict], probe: bool = True, telemetry_sources=None, **sections) -> RouterHandle:
        data = {"server": {"listen": "127.0.0.1:11434"}, "backends": backends}
        if telemetry_sources is None:
            data["telemetry"] = {"enabled": False}  # no host sensors in routing tests unless asked for
        # Auto must not depend on when the suite runs: quiet hours are off unless a test sets them.
        data["efficiency"] = {"quiet_hours": []}
        for key, value in sections.items():
            data.setdefault(key, {}).update(value) if isinstance(value, dict) else data.__setitem__(key, value)
        config = parse_config(data, "test")
        log = io.StringIO()
        router = Router(config, request_log=RequestLog(stream=log), telemetry_sources=telemetry_sources)
        await router.start(host="127.0.0.1", port=0, probe=probe)
        handle = RouterHandle(router, log)
        handles.append(handle)
        return handle

    yield make
    try:
        for handle in handles:
            await handle.assert_no_leaks()
    finally:
        for handle in handles:
            await handle.router.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


# ---------------------------------------------------------------- the real llama.cpp server


@pytest.fixture(scope="session")
def llamacpp_server():
    """One real llama.cpp server (xllamacpp, SmolLM2-135M) for the whole session."""
    server = start_server(alias=DEFAULT_ALIAS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def llamacpp_embedding_server():
    """A second real llama.cpp server in embedding mode (llama.cpp serves embeddings or completions)."""
    server = start_server(alias=DEFAULT_ALIAS, embedding=True)
    try:
        yield server
    finally:
        server.stop()
