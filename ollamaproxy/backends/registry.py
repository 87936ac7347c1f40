"""Backend registry: owns each backend's health, inventory and pooled HTTP session; probes them."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ollamaproxy.backends.health import Health, ProbeOutcome, classify_status, next_probe_delay
from ollamaproxy.backends.inventory import (
    Inventory,
    LoadedModel,
    parse_ollama_ps,
    parse_ollama_tags,
    parse_openai_models,
)
from ollamaproxy.config import BackendConfig, Config
from ollamaproxy.proxy.upstream import Pool
from ollamaproxy.tasks import cancel_and_wait

log = logging.getLogger("ollamaproxy.backends")

# Headers aiohttp would add on its own; the proxy sends the client's instead.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding")


@dataclass(eq=False)
class BackendState:
    """Live state of one backend. Mutated only by the Registry."""

    config: BackendConfig
    health: Health = Health.UNKNOWN
    reason: str = "not probed yet"
    busy_until: float = 0.0
    failures: int = 0
    inventory: Inventory | None = None  # None until the backend has answered a listing
    inventory_at: float = 0.0
    version: str | None = None
    speaks_openai: bool | None = None  # Ollama backends: serves /v1/* itself (None until checked)
    enabled: bool = True
    changed_at: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return self.config.id

    def available(self, now: float) -> bool:
        """May take new work: enabled, healthy (or not probed yet, or busy), and past any Retry-After."""
        if not self.enabled or now < self.busy_until:
            return False
        return self.health in (Health.HEALTHY, Health.UNKNOWN, Health.BUSY)

    def describe(self, now: float) -> str:
        if not self.enabled:
            return "disabled"
        if now < self.busy_until:
            return f"busy for {self.busy_until - now:.0f}s more ({self.reason})"
        return f"{self.health.value} ({self.reason})"


class Registry:
    """The one owner of backend state: probes health, refreshes inventory, holds HTTP sessions."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.states: dict[str, BackendState] = {
            backend.id: BackendState(config=backend, enabled=backend.enabled) for backend in config.backends
        }
        self.sessions: dict[str, aiohttp.ClientSession] = {}  # probes, listings, translation, admin
        self.pools: dict[str, Pool] = {}  # keep-alive connections for forwarded requests (proxy/upstream.py)
        self._wakeups: dict[str, asyncio.Event] = {}
        self._tasks: list[asyncio.Task] = []
        self._listeners: list[Callable[[BackendState, Health], None]] = []

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, *, probe: bool = True) -> None:
        server = self.config.server
        for state in self.states.values():
            # No sock_read timer: aiohttp would re-arm it on every chunk. Streams are watched for
            # silence by one watchdog each (proxy/forward.py), headers by header_timeout_seconds.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=server.connect_timeout_seconds, sock_read=None)
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=75, enable_cleanup_closed=False)
            self.sessions[state.id] = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                raise_for_status=False,
            )
            self.pools[state.id] = Pool(state.config.url, server.connect_timeout_seconds)
            self._wakeups[state.id] = asyncio.Event()
        if probe:
            first = [self.probe(state) for state in self.states.values()]
            await asyncio.gather(*first)
            for state in self.states.values():
                self._tasks.append(asyncio.create_task(self._probe_loop(state), name=f"probe-{state.id}"))

    async def close(self) -> None:
        await cancel_and_wait(self._tasks)
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()

    def add_listener(self, listener: Callable[[BackendState, Health], None]) -> None:
        """Call listener(state, previous_health) whenever a backend's health or availability changes."""
        self._listeners.append(listener)

    # ---- state changes ---------------------------------------------------------------

    def _apply(self, state: BackendState, outcome: ProbeOutcome) -> None:
        previous = state.health
        now = self.clock()
        if outcome.health is Health.HEALTHY:
            state.failures = 0
        else:
            state.failures += 1
        if outcome.health is Health.BUSY:
            # A backend that said "come back later" stays out until then (one probe interval when it
            # gave no Retry-After), even if a probe passes in between.
            wait = outcome.retry_after_seconds
            state.busy_until = now + (wait if wait is not None else self.config.health.interval_seconds)
        if outcome.health is not previous or outcome.reason != state.reason:
            state.changed_at = now
        state.health = outcome.health
        state.reason = outcome.reason
        if outcome.health is not previous:
            log.info(json.dumps({
                "event": "backend_health", "backend": state.id, "from": previous.value,
                "to": outcome.health.value, "reason": outcome.reason,
            }))
            self._notify(state, previous)

    def _notify(self, state: BackendState, previous: Health) -> None:
        for listener in self._listeners:
            listener(state, previous)

    def report_failure(self, backend_id: str, outcome: ProbeOutcome) -> None:
        """Passive health: a forwarded request saw the backend fail; re-probe it soon."""
        state = self.states[backend_id]
        self._apply(state, outcome)
        wake = self._wakeups.get(backend_id)
        if wake is not None and outcome.health is Health.DOWN:
            wake.set()

    def note_served(self, backend_id: str, model: str) -> None:
        """A request for `model` completed on an Ollama backend, so the model is now resident there."""
        state = self.states[backend_id]
        if state.config.kind == "ollama" and state.inventory is not None and model not in state.inventory.loaded:
            loaded = dict(state.inventory.loaded)
            loaded[model] = LoadedModel(name=model)
            state.inventory = Inventory(models=state.inventory.models | {model}, loaded=loaded)

    def is_loaded(self, backend_id: str, model: str) -> bool:
        inventory = self.states[backend_id].inventory
        return inventory is not None and model in inventory.loaded

    def set_enabled(self, backend_id: str, enabled: bool) -> None:
        state = self.states[backend_id]
        if state.enabled != enabled:
            state.enabled = enabled
            state.changed_at = self.clock()
            self._notify(state, state.health)

    # ---- probing ---------------------------------------------------------------------

    async def _probe_loop(self, state: BackendState) -> None:
        health_cfg = self.config.health
        wake = self._wakeups[state.id]
        while True:
            retry_after = max(0.0, state.busy_until - self.clock()) if state.health is Health.BUSY else None
            delay = next_probe_delay(state.health, state.failures, health_cfg.interval_seconds,
                                     health_cfg.max_backoff_seconds, retry_after)
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), timeout=delay)
            except TimeoutError:
                pass
            await self.probe(state)

    async def probe(self, state: BackendState) -> None:
        """Check one backend's health; refresh its inventory when it recovered or the listing is old."""
        was_healthy = state.health is Health.HEALTHY
        path = "/api/version" if state.config.kind == "ollama" else "/v1/models"
        try:
            status, headers, payload = await self._get(state, path)
            outcome = classify_status(status, headers.get("Retry-After"), time.time())
            if outcome.health is Health.HEALTHY and state.config.kind == "ollama" and isinstance(payload, dict):
                version = payload.get("version")
                state.version = version if isinstance(version, str) else None
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
            outcome = ProbeOutcome(Health.DOWN, _describe_error(error))
        self._apply(state, outcome)
        stale = self.clock() - state.inventory_at >= self.config.health.inventory_interval_seconds
        if state.health is Health.HEALTHY and (not was_healthy or state.inventory is None or stale):
            await self.refresh_inventory(state)

    async def refresh_inventory(self, state: BackendState) -> None:
        try:
            if state.config.kind == "ollama":
                tags = await self._get_ok(state, "/api/tags")
                ps = await self._get_ok(state, "/api/ps")
                loaded = parse_ollama_ps(ps)
                inventory = Inventory(models=parse_ollama_tags(tags) | frozenset(loaded), loaded=loaded)
                if state.speaks_openai is None:
                    # Older Ollama has no /v1/*: OpenAI clients then reach it through translation.
                    status, _headers, _payload = await self._get(state, "/v1/models")
                    state.speaks_openai = status != 404
            else:
                inventory = Inventory(models=parse_openai_models(await self._get_ok(state, "/v1/models")))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
            log.warning(json.dumps({"event": "inventory_failed", "backend": state.id, "reason": _describe_error(error)}))
            return
        first = state.inventory is None
        state.inventory = inventory
        state.inventory_at = self.clock()
        if first:
            self._notify(state, state.health)

    async def _get(self, state: BackendState, path: str) -> tuple[int, Any, Any]:
        session = self.sessions[state.id]
        timeout = aiohttp.ClientTimeout(total=self.config.health.timeout_seconds)
        async with session.get(state.config.url + path, timeout=timeout,
                               headers=backend_auth_headers(state.config)) as response:
            payload = None
            if 200 <= response.status < 300:
                payload = json.loads(await response.read())
            return response.status, response.headers, payload

    async def _get_ok(self, state: BackendState, path: str) -> Any:
        status, _headers, payload = await self._get(state, path)
        if not 200 <= status < 300:
            raise ValueError(f"GET {path} answered HTTP {status}")
        return payload

    async def fetch_listing(self, backend_id: str, path: str) -> Any:
        """GET a JSON listing from one backend (for aggregated /api/tags, /api/ps, /v1/models)."""
        return await self._get_ok(self.states[backend_id], path)


def backend_auth_headers(config: BackendConfig) -> dict[str, str]:
    return {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}


def _describe_error(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect: {error.os_error.strerror or error.os_error}"
    text = str(error) or type(error).__name__
    return text[:200]
