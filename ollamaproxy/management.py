"""Localhost-only management HTTP API: read and steer a running router through Control, plus /metrics."""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ollamaproxy.config import ConfigError, is_loopback_host, parse_host_port
from ollamaproxy.control import Control
from ollamaproxy.metrics import CONTENT_TYPE, Metrics
from ollamaproxy.modes import MODE_IDS, InvalidModeError
from ollamaproxy.proxy.errors import ApiError, parse_json_object

log = logging.getLogger("ollamaproxy.management")

DEFAULT_MANAGEMENT_LISTEN = "127.0.0.1:11437"
MAX_BODY_BYTES = 64 * 1024
MAX_DECISIONS = 200

CONTROL = web.AppKey("control", Control)
METRICS = web.AppKey("metrics", Metrics)
REQUEST_DB = web.AppKey("request_db", object)
RELOAD = web.AppKey("reload", object)

_HOST_HEADER = re.compile(r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>\d{1,5}))?$")


# ---------------------------------------------------------------- request guards


def _loopback_name(host: str) -> bool:
    """localhost or a loopback IP literal (127.0.0.0/8, ::1): what a local client may put in Host/Origin."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_header_allowed(value: str | None) -> bool:
    """True for 127.0.0.1[:port], localhost[:port], [::1][:port] (any loopback literal); a DNS name never."""
    if not value:
        return False
    match = _HOST_HEADER.match(value.strip())
    if match is None:
        return False
    host = match.group("v6") or match.group("name")
    if match.group("name") and ":" in host:
        return False
    return _loopback_name(host)


def origin_allowed(value: str) -> bool:
    """True for an http(s) Origin on a loopback host; "null" and every other site are refused."""
    try:
        parts = urlsplit(value.strip())
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and hostname is not None and _loopback_name(hostname)


def _error(status: int, code: str, message: str, **details: Any) -> web.Response:
    body: dict[str, Any] = {"error": message, "code": code}
    body.update(details)
    return web.json_response(body, status=status)


@web.middleware
async def _guard(request: web.Request, handler):
    """Refuse requests a web page could make: a non-loopback Host (DNS rebinding) or a foreign Origin."""
    host = request.headers.get("Host")
    if not host_header_allowed(host):
        return _error(403, "forbidden_host",
                      f"Host {host!r} is not allowed: the management API answers only to 127.0.0.1, localhost "
                      "or [::1] (protection against DNS rebinding)")
    origin = request.headers.get("Origin")
    if origin is not None and not origin_allowed(origin):
        return _error(403, "forbidden_origin",
                      f"Origin {origin!r} is not allowed: only pages served from localhost may call the "
                      "management API")
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler):
    """Every error as JSON in the proxy's Ollama shape {"error", "code"}."""
    try:
        return await handler(request)
    except ApiError as error:
        body: dict[str, Any] = {"error": error.message, "code": error.code}
        if error.details:
            body["details"] = error.details
        return web.json_response(body, status=error.status, headers=error.headers or None)
    except web.HTTPNotFound:
        return _error(404, "not_found", f"no management endpoint {request.method} {request.path}; "
                                        "see GET /health, /backends, /efficiency, /queue, /metrics")
    except web.HTTPMethodNotAllowed as error:
        return _error(405, "method_not_allowed",
                      f"{request.method} is not allowed on {request.path}; allowed: "
                      + ", ".join(sorted(error.allowed_methods)), allowed=sorted(error.allowed_methods))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error(error.status, error.reason.lower().replace(" ", "_"), error.text or error.reason)
    except Exception:
        log.exception("management handler failed: %s %s", request.method, request.path)
        return _error(500, "internal_error", "internal error in the management API; see the service log")


# ---------------------------------------------------------------- handlers


async def _json_body(request: web.Request, *, required: bool) -> dict:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, "missing_body", "a JSON object body is required")
        return {}
    return parse_json_object(raw)


def _efficiency(control: Control) -> dict[str, Any]:
    return {
        "mode": control.mode(),
        "effective": control.effective_mode(),
        "reason": control.effective_reason(),
        "modes": control.modes(),
        "holds": control.holds(),
        "degraded": control.degraded(),
        "auto_reasoning": control.auto_reasoning(),
    }


def _backend_id(control: Control, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in control.backend_ids():
        raise ApiError(404, "unknown_backend", f"unknown backend {value!r}; backends: "
                                               + ", ".join(control.backend_ids()))
    return value


async def health(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    backends = control.backends()
    routing = control.routing()
    healthy = sum(1 for b in backends if b["health"] == "healthy")
    return web.json_response({
        "status": "ok",
        "backends": len(backends),
        "healthy_backends": healthy,
        "queue_depth": routing["queue_depth"],
        "in_flight": routing["in_flight"],
        "total_requests": routing["total_requests"],
        "paused": routing["paused"],
        "mode": control.mode(),
        "effective_mode": control.effective_mode(),
        "degraded": control.degraded(),
    })


async def backends(request: web.Request) -> web.Response:
    return web.json_response({"backends": request.app[CONTROL].backends()})


async def backend(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    backend_id = _backend_id(control, request.match_info["backend_id"])
    return web.json_response(control.backend(backend_id))


async def set_backend_enabled(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    backend_id = _backend_id(control, request.match_info["backend_id"])
    control.set_backend_enabled(backend_id, request.match_info["action"] == "enable")
    return web.json_response(control.backend(backend_id))


async def thermal(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    device, temperature = control.hottest()
    return web.json_response({"devices": control.devices(),
                              "hottest": {"device": device, "temperature_celsius": temperature}})


async def system(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTROL].system())


async def get_efficiency(request: web.Request) -> web.Response:
    return web.json_response(_efficiency(request.app[CONTROL]))


async def set_efficiency(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    payload = await _json_body(request, required=True)
    mode = payload.get("mode")
    if not isinstance(mode, str):
        raise ApiError(400, "invalid_mode", "field 'mode' (a string) is required; valid modes: "
                       + ", ".join(MODE_IDS), details={"modes": list(MODE_IDS)})
    try:
        control.set_mode(mode, "management-api")
    except InvalidModeError as error:
        raise ApiError(400, "invalid_mode", str(error), details={"modes": list(MODE_IDS)}) from None
    return web.json_response(_efficiency(control))


async def queue(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONTROL].routing())


async def pause(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    payload = await _json_body(request, required=False)
    backend_id = _backend_id(control, payload.get("backend"))
    reason = payload.get("reason", "")
    if not isinstance(reason, str):
        raise ApiError(400, "invalid_reason", "field 'reason' must be a string")
    control.pause(backend_id, reason[:200] or "paused through the management API")
    return web.json_response(_pause_state(control, backend_id))


async def resume(request: web.Request) -> web.Response:
    control = request.app[CONTROL]
    payload = await _json_body(request, required=False)
    backend_id = _backend_id(control, payload.get("backend"))
    control.resume(backend_id)
    return web.json_response(_pause_state(control, backend_id))


def _pause_state(control: Control, backend_id: str | None) -> dict[str, Any]:
    state: dict[str, Any] = {"routing": control.routing()}
    if backend_id is not None:
        state["backend"] = control.backend(backend_id)
    return state


async def decisions(request: web.Request) -> web.Response:
    text = request.query.get("limit", "20")
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if not 0 <= limit <= MAX_DECISIONS:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number 0-{MAX_DECISIONS}, got {text!r}")
    return web.json_response({"decisions": request.app[CONTROL].recent_decisions(limit)})


_EXPLAIN_TEXT = ("model", "api", "priority", "target_backend", "client_id")
_EXPLAIN_FLAGS = ("latency_critical", "power_efficient")
_EXPLAIN_NUMBERS = ("max_latency_ms", "max_power_watts", "expected_tokens")


async def explain(request: web.Request) -> web.Response:
    """The routing decision for a described request (query parameters); changes nothing."""
    query = request.query
    description: dict[str, Any] = {key: query[key] for key in _EXPLAIN_TEXT if key in query}
    for key in _EXPLAIN_FLAGS:
        if key in query:
            description[key] = query[key].strip().lower() in ("1", "true", "yes", "on")
    for key in _EXPLAIN_NUMBERS:
        if key in query:
            try:
                description[key] = float(query[key]) if key != "expected_tokens" else int(query[key])
            except ValueError:
                raise ApiError(400, f"invalid_{key}", f"{key} must be a number, got {query[key]!r}") from None
    return web.json_response(request.app[CONTROL].simulate(description))


async def get_metrics(request: web.Request) -> web.Response:
    text = request.app[METRICS].render(request.app[CONTROL])
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def post_reload(request: web.Request) -> web.Response:
    callback = request.app[RELOAD]
    if callback is None:
        raise ApiError(501, "reload_unavailable", "this service was started without a reload hook; "
                                                  "restart it or send SIGHUP")
    try:
        result = callback()
        if inspect.isawaitable(result):
            result = await result
    except ConfigError as error:
        raise ApiError(400, "invalid_config", f"{error.source}: invalid configuration; the running "
                       "configuration is kept", details={"problems": error.problems}) from None
    return web.json_response({"reloaded": True, "result": result if _jsonable(result) else str(result)})


async def stats(request: web.Request) -> web.Response:
    from ollamaproxy.commands.stats import parse_duration

    request_db = request.app[REQUEST_DB]
    if request_db is None:
        raise ApiError(501, "request_db_unavailable", "the request database is turned off in this service")
    text = request.query.get("since", "24h")
    try:
        since = parse_duration(text)
    except ValueError as error:
        raise ApiError(400, "invalid_since", str(error)) from None
    await request_db.flush()
    try:
        rows = await asyncio.to_thread(request_db.query_stats, since)
    except FileNotFoundError:
        rows = []
    return web.json_response({"since_seconds": since, "stats": rows})


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------- app and listener


def create_management_app(control: Control, *, request_db=None, reload: Callable[[], Any] | None = None,
                          metrics: Metrics | None = None) -> web.Application:
    """The management API for `control`. `metrics` is fed by the request-log sink (a fresh one when None);
    `request_db` (a RequestDb) enables GET /stats; `reload()` (sync or async, raising ConfigError on a
    bad config) enables POST /reload."""
    app = web.Application(middlewares=[_guard, _errors], client_max_size=MAX_BODY_BYTES)
    app[CONTROL] = control
    app[METRICS] = metrics if metrics is not None else Metrics()
    app[REQUEST_DB] = request_db
    app[RELOAD] = reload
    routes = app.router
    routes.add_get("/health", health)
    routes.add_get("/backends", backends)
    routes.add_get("/backends/{backend_id}", backend)
    routes.add_post("/backends/{backend_id}/{action:enable|disable}", set_backend_enabled)
    routes.add_get("/thermal", thermal)
    routes.add_get("/system", system)
    routes.add_get("/efficiency", get_efficiency)
    routes.add_post("/efficiency", set_efficiency)
    routes.add_get("/queue", queue)
    routes.add_post("/pause", pause)
    routes.add_post("/resume", resume)
    routes.add_get("/decisions", decisions)
    routes.add_get("/explain", explain)
    routes.add_get("/metrics", get_metrics)
    routes.add_post("/reload", post_reload)
    routes.add_get("/stats", stats)
    return app


def check_listen(listen: str) -> tuple[str, int]:
    """(host, port) of a management address; ValueError unless it is a loopback address."""
    host, port = parse_host_port(listen)
    if not is_loopback_host(host):
        raise ValueError(f"management listen address {listen!r} is not loopback: the management API has no "
                         "authentication, so it only listens on 127.0.0.1, ::1 or localhost "
                         f"(e.g. {DEFAULT_MANAGEMENT_LISTEN})")
    return host, port


async def start_management(control: Control, listen: str = DEFAULT_MANAGEMENT_LISTEN, *, port: int | None = None,
                           **kw) -> web.AppRunner:
    """Serve the management API on `listen` (loopback only, else ValueError); `port=0` picks a free port.

    Returns the runner: `runner.addresses` has the bound address, `await runner.cleanup()` stops it.
    Keyword arguments go to `create_management_app`.
    """
    host, listen_port = check_listen(listen)
    runner = web.AppRunner(create_management_app(control, **kw), access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, listen_port if port is None else port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def runner_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


__all__ = ["DEFAULT_MANAGEMENT_LISTEN", "METRICS", "check_listen", "create_management_app", "host_header_allowed",
           "origin_allowed", "runner_url", "start_management"]
