"""The client-facing aiohttp application: routes, the request gate, and the forwarding loop."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace

import aiohttp
from aiohttp import web

from ollamaproxy import __version__
from ollamaproxy.backends.health import Health
from ollamaproxy.backends.models import canonical_model
from ollamaproxy.backends.registry import Registry
from ollamaproxy.config import Config
from ollamaproxy.proxy import aggregate
from ollamaproxy.proxy.errors import ApiError, error_response, parse_json_object
from ollamaproxy.proxy.forward import (
    BeforeFirstByteError,
    ForwardResult,
    drain_then,
    open_upstream,
    relay,
    upstream_headers,
)
from ollamaproxy.proxy.paths import BlockedEndpoints, normalise_path
from ollamaproxy.proxy.translated import forward_translated
from ollamaproxy.requestlog import RequestLog
from ollamaproxy.routing.estimates import Estimates
from ollamaproxy.routing.headers import RoutingHints, new_request_id, parse_routing_headers
from ollamaproxy.routing.planner import Plan, Planner, expected_tokens
from ollamaproxy.routing.scheduler import Grant, Scheduler

# Inference endpoints: path -> API family whose shape requests and errors take.
INFERENCE_ROUTES = {
    "/api/chat": "ollama",
    "/api/generate": "ollama",
    "/api/embed": "ollama",
    "/api/embeddings": "ollama",
    "/api/show": "ollama",
    "/v1/chat/completions": "openai",
    "/v1/completions": "openai",
    "/v1/embeddings": "openai",
}
LISTING_ROUTES = ("/", "/api/version", "/api/tags", "/api/ps", "/v1/models")

PROXY_STATE = web.AppKey("proxy_state", "ProxyState")
log = logging.getLogger("ollamaproxy.proxy")
ADMIN_KEY_HEADER = "X-Admin-Key"


@dataclass
class ProxyState:
    """Everything a request handler needs, shared through the app."""

    config: Config
    registry: Registry
    scheduler: Scheduler
    planner: Planner
    estimates: Estimates
    request_log: RequestLog
    blocked: BlockedEndpoints = field(init=False)
    total_requests: int = 0
    decisions: deque = field(default_factory=lambda: deque(maxlen=200))

    def __post_init__(self) -> None:
        self.blocked = BlockedEndpoints(self.config.security.blocked_endpoints)


@dataclass
class _Parsed:
    model: str            # canonical, for routing
    body: bytes           # what goes to the backend
    payload: dict         # the parsed body (read-only: never re-serialised)


def parse_body(raw: bytes, path: str) -> _Parsed:
    """Validate the JSON body and its model field (fail closed); the body itself is left untouched."""
    payload = parse_json_object(raw)
    model = payload.get("model")
    if model is None and path == "/api/show":
        model = payload.get("name")  # Ollama's older spelling for /api/show
    if model is None:
        raise ApiError(400, "missing_model", "field 'model' is required: name the model to run, e.g. \"llama3.2\"")
    if not isinstance(model, str):
        raise ApiError(400, "invalid_model", f"field 'model' must be a string, got {type(model).__name__}")
    trimmed = model.strip()
    if not trimmed:
        raise ApiError(400, "missing_model", "field 'model' must not be empty or only whitespace")
    if trimmed != model:
        # The one rewrite the proxy makes: a padded model name would be refused by the backend.
        key = "model" if "model" in payload else "name"
        payload[key] = trimmed
        raw = json.dumps(payload, ensure_ascii=False).encode()
    return _Parsed(canonical_model(trimmed), raw, payload)


def routing_headers(grant: Grant, plan: Plan, failover: bool, id_header: dict[str, str],
                    suffix: str = "") -> dict[str, str]:
    """The response headers that say where a request went and why."""
    backend_id = grant.backend_id
    headers = dict(id_header)
    headers["X-Backend-Used"] = backend_id
    headers["X-Routing-Reason"] = ("failover-" if failover else "") + grant.reason + suffix
    headers["X-Efficiency-Mode"] = plan.mode.mode.value
    candidate = grant.candidate
    if candidate.estimated_latency_ms is not None:
        headers["X-Estimated-Latency-Ms"] = f"{candidate.estimated_latency_ms:.0f}"
        headers["X-Estimated-Power-W"] = f"{candidate.estimated_power_w:.1f}"
    alternatives = [c.backend_id for c in plan.ticket.ranked if c.backend_id != backend_id]
    if alternatives:
        headers["X-Alternatives"] = ",".join(alternatives)
    return headers


class ProxyHandlers:
    def __init__(self, state: ProxyState):
        self.state = state

    # ---- inference -------------------------------------------------------------------

    async def inference(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        started = time.monotonic()
        path = request.path
        api = INFERENCE_ROUTES[path]
        record = {
            "request_id": None, "client": request.remote, "method": request.method, "path": path,
            "model": None, "backend": None, "mode": None, "priority": None, "status": None, "queued_ms": 0.0,
            "ttfb_ms": None, "total_ms": None, "bytes": 0, "outcome": "ok",
        }
        id_header: dict[str, str] = {}
        state.total_requests += 1
        try:
            try:
                hints = parse_routing_headers(request.headers)
            except ApiError:
                record["request_id"] = new_request_id()
                id_header["X-Request-ID"] = record["request_id"]
                raise
            record["request_id"] = hints.request_id
            record["priority"] = hints.priority.name.lower().replace("_", "-")
            id_header["X-Request-ID"] = hints.request_id
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(413, "body_too_large",
                               f"request body exceeds the limit of {state.config.server.max_body_bytes} bytes "
                               "([server] max_body_bytes)") from None
            parsed = parse_body(raw, path)
            record["model"] = parsed.model
            if path == "/api/show":
                owner = aggregate.openai_only_backend(state.registry, parsed.model)
                if owner is not None:
                    record.update(backend=owner, status=200, outcome="answered-locally")
                    return web.json_response(aggregate.openai_model_show(parsed.model, owner),
                                             headers={**id_header, "X-Backend-Used": owner,
                                                      "X-Routing-Reason": "show-from-inventory"})
            if hints.client_id is None:
                hints = replace(hints, client_id=request.remote or "")
            tokens = expected_tokens(parsed.payload, hints.media_type, path)
            result = await self._route(request, parsed, api, hints, tokens, record, id_header)
            record["status"] = result.status
            record["bytes"] = result.bytes_sent
            if result.first_byte_at is not None:
                record["ttfb_ms"] = round((result.first_byte_at - started) * 1000, 2)
            record["outcome"] = result.outcome
            return result.response
        except ApiError as error:
            record["status"] = error.status
            record["outcome"] = error.code
            return error_response(path, error, id_header)
        except (asyncio.CancelledError, ConnectionResetError):
            record["outcome"] = "client_disconnected"
            record["status"] = record["status"] or 499
            raise
        except Exception:  # a bug: answer in the API's shape and keep the traceback in the log
            log.exception(json.dumps({"event": "internal_error", "request_id": record["request_id"]}))
            record["status"] = 500
            record["outcome"] = "internal_error"
            return error_response(path, ApiError(500, "internal_error",
                                                 f"internal error in the proxy (request {record['request_id']})"),
                                  id_header)
        finally:
            record["total_ms"] = round((time.monotonic() - started) * 1000, 2)
            state.request_log.log(record)

    async def _route(self, request: web.Request, parsed: _Parsed, api: str, hints: RoutingHints, tokens: int,
                     record: dict, id_header: dict[str, str]) -> ForwardResult:
        state = self.state
        registry = state.registry
        tried: dict[str, str] = {}
        while True:
            try:
                plan = state.planner.plan(parsed.model, api, hints, tokens, frozenset(tried), request.path)
            except ApiError:
                if not tried:
                    raise
                raise ApiError(503, "all_backends_failed",
                               "every backend that serves the model failed before answering: "
                               + "; ".join(f"{k}: {v}" for k, v in tried.items()),
                               headers={"Retry-After": "5"}, details={"attempts": tried}) from None
            record["mode"] = plan.mode.mode.value
            grant = await state.scheduler.acquire(plan.ticket)
            record["queued_ms"] = round(record["queued_ms"] + grant.queued_seconds * 1000, 2)
            backend_id = grant.backend_id
            record["backend"] = backend_id
            state.decisions.append({
                "time": time.time(), "request_id": hints.request_id, "model": parsed.model, "backend": backend_id,
                "reason": grant.reason, "mode": plan.mode.mode.value, "priority": record["priority"],
                "queued_ms": record["queued_ms"],
            })
            forward = self._forward_translated if grant.candidate.translate else self._forward_once
            try:
                result = await forward(request, parsed, grant, plan, bool(tried), id_header)
            except BeforeFirstByteError as error:
                state.scheduler.release(backend_id, grant.candidate.cost)
                registry.report_failure(backend_id, error.outcome)
                tried[backend_id] = error.outcome.reason
                if hints.target_backend is not None:
                    raise ApiError(error.status or 502, "backend_failed",
                                   f"backend {backend_id} failed: {error.outcome.reason}",
                                   headers={"Retry-After": "5"} if error.status else None) from None
                continue
            if result.backend_failure is not None:
                registry.report_failure(backend_id, result.backend_failure)
            elif 200 <= result.status < 300:
                registry.note_served(backend_id, parsed.model)
                sample = result.sample()
                if sample is not None:
                    state.estimates.record(backend_id, parsed.model, *sample)
            return result

    async def _forward_once(self, request: web.Request, parsed: _Parsed, grant: Grant, plan: Plan,
                            failover: bool, id_header: dict[str, str]) -> ForwardResult:
        """Forward on a reserved slot; the slot is released here on every path except a hand-off to drain."""
        state = self.state
        backend_id = grant.backend_id
        cost = grant.candidate.cost
        backend = state.registry.states[backend_id].config
        pool = state.registry.pools[backend_id]
        headers = routing_headers(grant, plan, failover, id_header)
        upstream = None
        handed_off = False
        caller_releases = False
        completed = False
        try:
            sent_at = time.monotonic()
            upstream = await open_upstream(pool, request, backend, parsed.body,
                                           state.config.server.header_timeout_seconds)
            result = await relay(request, upstream, headers, backend_id, sent_at,
                                 state.config.server.stream_idle_timeout_seconds)
            completed = result.backend_failure is None
            return result
        except BeforeFirstByteError:
            caller_releases = True  # the failover loop releases the slot and tries the next candidate
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            if upstream is not None and not backend.cancel_on_disconnect:
                handed_off = True
                asyncio.get_running_loop().create_task(
                    drain_then(upstream, lambda: state.scheduler.release(backend_id, cost)))
            raise
        finally:
            if upstream is not None and not handed_off:
                if completed:
                    upstream.release()  # keep the pooled connection
                else:
                    upstream.close()    # closing tells the backend to stop generating
            if not handed_off and not caller_releases:
                state.scheduler.release(backend_id, cost)

    async def _forward_translated(self, request: web.Request, parsed: _Parsed, grant: Grant, plan: Plan,
                                  failover: bool, id_header: dict[str, str]) -> ForwardResult:
        """Like _forward_once, for a backend that speaks the other API: translate there and back."""
        state = self.state
        backend_id = grant.backend_id
        backend = state.registry.states[backend_id].config
        headers = routing_headers(grant, plan, failover, id_header, "+translated")
        caller_releases = False
        try:
            return await forward_translated(
                request, parsed.payload, str(parsed.payload.get("model") or parsed.model), backend,
                state.registry.sessions[backend_id], headers,
                header_timeout=state.config.server.header_timeout_seconds,
                idle_seconds=state.config.server.stream_idle_timeout_seconds, request_id=id_header["X-Request-ID"])
        except BeforeFirstByteError:
            caller_releases = True
            raise
        finally:
            if not caller_releases:
                state.scheduler.release(backend_id, grant.candidate.cost)

    async def _admin_pass_through(self, request: web.Request, path: str) -> web.StreamResponse:
        """An admin request with the right key: forwarded as is to the backend named by X-Target-Backend."""
        state = self.state
        target = (request.headers.get("X-Target-Backend") or "").strip()
        if target not in state.registry.states or state.registry.states[target].config.kind != "ollama":
            ollama_ids = [s.id for s in state.registry.states.values() if s.config.kind == "ollama"]
            return error_response(path, ApiError(
                400, "invalid_header", f"X-Target-Backend: admin requests must name an Ollama backend "
                f"({', '.join(ollama_ids)}); got {target!r}"))
        backend = state.registry.states[target].config
        query = request.rel_url.raw_query_string
        body = await request.read()
        session = state.registry.sessions[target]
        try:
            upstream = await session.request(request.method, backend.url + path + (f"?{query}" if query else ""),
                                             data=body, headers=upstream_headers(request, backend))
        except (OSError, aiohttp.ClientError) as error:
            return error_response(path, ApiError(502, "backend_failed", f"backend {target} failed: {error}"))
        try:
            result = await relay(request, upstream, {"X-Backend-Used": target}, target, time.monotonic(),
                                 state.config.server.stream_idle_timeout_seconds)
        except BeforeFirstByteError as error:
            return error_response(path, ApiError(502, "backend_failed", f"backend {target} failed: {error}"))
        finally:
            upstream.close()
        state.request_log.log({"request_id": new_request_id(), "client": request.remote, "method": request.method,
                               "path": path, "backend": target, "status": result.status, "outcome": "admin"})
        return result.response

    # ---- listings and misc -------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        versions = [s.version for s in self.state.registry.states.values()
                    if s.version and s.health is Health.HEALTHY]
        version = min(versions, key=aggregate.version_key) if versions else "0.0.0"
        return web.json_response({"version": version, "proxy": f"ollamaproxy {__version__}"})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response(await aggregate.ollama_listing(self.state.registry, "/api/tags"))

    async def ps(self, request: web.Request) -> web.Response:
        return web.json_response(await aggregate.ollama_listing(self.state.registry, "/api/ps"))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(await aggregate.openai_models(self.state.registry))

    async def fallback(self, request: web.Request) -> web.Response:
        """Every path no route took: blocked admin endpoints (403), wrong methods (405), else 404."""
        normalised = normalise_path(request.raw_path)
        pattern = self.state.blocked.match(normalised)
        if pattern is not None:
            admin_key = self.state.config.security.admin_key
            given = request.headers.get(ADMIN_KEY_HEADER)
            if admin_key is not None and given is not None and hmac.compare_digest(
                    given.encode(), admin_key.get_secret_value().encode()):
                return await self._admin_pass_through(request, normalised)
            hint = (" (the admin key given does not match)" if admin_key is not None and given is not None
                    else "")
            error = ApiError(403, "endpoint_blocked",
                             f"{normalised} is an administrative endpoint and is blocked by the proxy "
                             f"(matches {pattern!r} in [security] blocked_endpoints){hint}")
            return error_response(normalised, error)
        if normalised in INFERENCE_ROUTES:
            error = ApiError(405, "method_not_allowed", f"{request.method} {normalised}: use POST")
            return error_response(normalised, error, {"Allow": "POST"})
        if normalised in LISTING_ROUTES:
            allowed = "GET, HEAD"
            error = ApiError(405, "method_not_allowed", f"{request.method} {normalised}: use {allowed}")
            return error_response(normalised, error, {"Allow": allowed})
        error = ApiError(404, "not_found",
                         f"no such endpoint: {request.method} {request.path}; the proxy serves "
                         + ", ".join(sorted(set(INFERENCE_ROUTES) | set(LISTING_ROUTES))))
        return error_response(request.path, error)


def create_proxy_app(state: ProxyState) -> web.Application:
    app = web.Application(client_max_size=state.config.server.max_body_bytes)
    app[PROXY_STATE] = state
    handlers = ProxyHandlers(state)
    blocked = state.blocked

    def add(method: str, path: str, handler) -> None:
        if blocked.match(normalise_path(path)) is None:
            if method == "GET":
                app.router.add_get(path, handler)  # also answers HEAD, as Ollama does
            else:
                app.router.add_route(method, path, handler)

    add("GET", "/", handlers.root)
    add("GET", "/api/version", handlers.version)
    add("GET", "/api/tags", handlers.tags)
    add("GET", "/api/ps", handlers.ps)
    add("GET", "/v1/models", handlers.models)
    for path in INFERENCE_ROUTES:
        add("POST", path, handlers.inference)
    from ollamaproxy.frontdoors.websocket import WS_PATH, WebSocketDoor

    if blocked.match(normalise_path(WS_PATH)) is None:
        # Streams over WebSocket go back through this app's own HTTP routes: no side door.
        WebSocketDoor(max_msg_size=state.config.server.max_body_bytes).install(app)
    app.router.add_route("*", "/{tail:.*}", handlers.fallback)
    return app
