"""WebSocket front door (GET /v1/stream/ws): each request is re-sent as loopback HTTP to the router, no side door."""

# Protocol. One JSON object per text message:
#   request: {"request_id", "model", "prompt" | "messages", "options", "priority", "max_latency_ms",
#             "max_power_watts", "latency_critical", "power_efficient", "target_backend", "client_id"}
#            plus Ollama body fields passed as they are (system, format, keep_alive, images, ...).
#   cancel:  {"cancel": "<request_id>"}
# Chunks back: {"request_id", "token", "done", "error", "ttft_ms", "total_time_ms", "token_count",
# "tokens_per_sec"}; one per token, then a final chunk (done true, the stats, "done_reason",
# "backend", "routing_reason"), or an error chunk (done true, "error", "code", "status": the HTTP
# status the router answered). A cancelled request ends with error "cancelled".
# Every accepted request_id gets exactly one done chunk. A message rejected before it could start a
# request answers under its request_id when that id is valid and not in flight, else under null
# (duplicate ids, unknown cancels, unusable ids), so a bad message never ends another request's
# stream. Requests on one connection run concurrently (at most `max_concurrent`); the socket stays
# open after a bad message. Closing the socket cancels all of its requests.
#
# No side door: each request is POSTed to the router's own listener (the address this socket came
# in on) as /api/chat or /api/generate, with the routing fields as routing headers, through one
# pooled client session (see ollamaproxy.frontdoors). It is queued, paused, pinned, scheduled and
# logged exactly like HTTP; cancelling closes that HTTP request, and the router frees the slot.
#
# Browsers: the Origin header is checked before the upgrade. No Origin (non-browser clients) or a
# loopback origin is accepted; any other origin gets 403 {"code": "forbidden_origin"}.

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

from ollamaproxy.config import is_loopback_host
from ollamaproxy.frontdoors import (
    FrontDoorError,
    GenerateEvent,
    Hints,
    LoopbackClient,
    parse_hints,
)
from ollamaproxy.routing.headers import new_request_id

__all__ = ["WS_PATH", "WebSocketDoor", "is_loopback_origin", "websocket_handler"]

WS_PATH = "/v1/stream/ws"
DEFAULT_MAX_CONCURRENT = 32
HINT_FIELDS = ("request_id", "client_id", "target_backend", "latency_critical", "power_efficient",
               "max_latency_ms", "max_power_watts", "priority")
BODY_FIELDS = ("model", "prompt", "messages", "options", "system", "format", "keep_alive", "images", "tools",
               "think", "template", "raw", "suffix", "context")
ALLOWED_FIELDS = frozenset(HINT_FIELDS + BODY_FIELDS)

log = logging.getLogger("ollamaproxy.frontdoors.websocket")


def is_loopback_origin(origin: str) -> bool:
    """http(s)://localhost, 127.0.0.0/8 or [::1], any port, nothing else (no path, user or query)."""
    try:
        url = URL(origin)
    except (ValueError, TypeError):
        return False
    if url.scheme not in ("http", "https") or url.user or url.query_string or url.fragment \
            or url.path not in ("", "/"):
        return False
    return url.host is not None and is_loopback_host(url.host.lower())


def _chunk(request_id: str | None, *, token: str = "", done: bool = False, error: str | None = None,
           **extra) -> dict:
    chunk = {"request_id": request_id, "token": token, "done": done, "error": error, "ttft_ms": None,
             "total_time_ms": None, "token_count": None, "tokens_per_sec": None}
    chunk.update(extra)
    return chunk


def _error_chunk(request_id: str | None, error: FrontDoorError) -> dict:
    return _chunk(request_id, done=True, error=error.message, code=error.code, status=error.status)


def _event_chunk(request_id: str, event: GenerateEvent) -> dict:
    if not event.done:
        return _chunk(request_id, token=event.token)
    return _chunk(request_id, token=event.token, done=True, ttft_ms=event.ttft_ms,
                  total_time_ms=event.total_time_ms, token_count=event.token_count,
                  tokens_per_sec=event.tokens_per_sec, prompt_tokens=event.prompt_tokens,
                  done_reason=event.done_reason, backend=event.backend, routing_reason=event.routing_reason)


class _Connection:
    """One client socket: its requests in flight and a lock so frames from concurrent requests never mix."""

    def __init__(self, ws: web.WebSocketResponse, base_url: str, client_id: str | None):
        self.ws = ws
        self.base_url = base_url
        self.client_id = client_id
        self.tasks: dict[str, asyncio.Task] = {}
        self.cancelled: set[str] = set()
        self.closing = False
        self._lock = asyncio.Lock()

    async def send(self, chunk: dict) -> None:
        if self.ws.closed:
            return
        async with self._lock:
            try:
                await self.ws.send_str(json.dumps(chunk, ensure_ascii=False))
            except (ConnectionError, RuntimeError):
                pass  # the client went away: the receive loop ends and cancels what is left


class WebSocketDoor:
    """The /v1/stream/ws handler; `install(app)` adds the route and the shutdown/cleanup hooks."""

    def __init__(self, base_url: Callable[[], str] | None = None, *, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
                 max_msg_size: int = 64 * 1024 * 1024, heartbeat: float | None = 30.0):
        self._base_url = base_url
        self.max_concurrent = max_concurrent
        self.max_msg_size = max_msg_size
        self.heartbeat = heartbeat
        self.client = LoopbackClient()
        self._connections: set[_Connection] = set()

    def install(self, app: web.Application, path: str = WS_PATH) -> None:
        app.router.add_get(path, self.handle, allow_head=False)
        app.on_shutdown.append(self.shutdown)
        app.on_cleanup.append(self.cleanup)

    async def shutdown(self, app: web.Application | None = None) -> None:
        """Close every socket (going away); their handlers then cancel what is still in flight."""
        for connection in list(self._connections):
            connection.closing = True
            with contextlib.suppress(Exception):
                await connection.ws.close(code=WSCloseCode.GOING_AWAY, message=b"router shutting down")

    async def cleanup(self, app: web.Application | None = None) -> None:
        await self.client.close()

    def _self_url(self, request: web.Request) -> str:
        """The listener this socket came in on: the same router, reachable from here."""
        if self._base_url is not None:
            return self._base_url()
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            raise web.HTTPServiceUnavailable(text="connection has no local address")
        host, port = sockname[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is not None and not is_loopback_origin(origin):
            shown = origin if len(origin) <= 100 else origin[:97] + "..."
            return web.json_response(
                {"error": f"WebSocket connections from origin {shown!r} are refused: only pages served from "
                          "localhost, 127.0.0.1 or [::1], and clients that send no Origin, may connect",
                 "code": "forbidden_origin"}, status=403)
        ws = web.WebSocketResponse(heartbeat=self.heartbeat, max_msg_size=self.max_msg_size)
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error": f"{request.path} speaks WebSocket: connect with an Upgrade: websocket request",
                 "code": "websocket_required"}, status=426, headers={"Upgrade": "websocket"})
        base_url = self._self_url(request)
        await ws.prepare(request)
        connection = _Connection(ws, base_url, request.remote)
        self._connections.add(connection)
        try:
            async for message in ws:
                if message.type is WSMsgType.TEXT:
                    await self._on_message(connection, message.data)
                elif message.type is WSMsgType.BINARY:
                    await connection.send(_error_chunk(None, FrontDoorError(
                        400, "invalid_message", "binary frames are not supported: send each request as JSON text")))
        finally:
            connection.closing = True
            tasks = list(connection.tasks.values())
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._connections.discard(connection)
        return ws

    async def _on_message(self, connection: _Connection, data: str) -> None:
        try:
            payload = json.loads(data)
        except ValueError as error:
            await connection.send(_error_chunk(None, FrontDoorError(
                400, "invalid_json", f"message is not valid JSON: {error}")))
            return
        if not isinstance(payload, dict):
            await connection.send(_error_chunk(None, FrontDoorError(
                400, "invalid_message", f"message must be a JSON object, got {type(payload).__name__}")))
            return
        if "cancel" in payload:
            await self._cancel(connection, payload)
            return
        try:
            request_id, body, hints = self._parse_request(connection, payload)
        except _Rejected as rejected:
            await connection.send(_error_chunk(rejected.request_id, rejected.error))
            return
        if len(connection.tasks) >= self.max_concurrent:
            await connection.send(_error_chunk(request_id, FrontDoorError(
                429, "too_many_requests",
                f"this connection already has {len(connection.tasks)} requests in flight (the limit is "
                f"{self.max_concurrent}): wait for one to finish, or open another connection")))
            return
        connection.tasks[request_id] = asyncio.get_running_loop().create_task(
            self._run(connection, request_id, body, hints), name=f"ws-request-{request_id}")

    async def _cancel(self, connection: _Connection, payload: dict) -> None:
        target = payload["cancel"]
        extra = sorted(set(payload) - {"cancel"})
        if extra:
            await connection.send(_error_chunk(None, FrontDoorError(
                400, "invalid_message", f"a cancel message holds only 'cancel'; also got {', '.join(extra)}")))
            return
        task = connection.tasks.get(target) if isinstance(target, str) else None
        if task is None:
            await connection.send(_error_chunk(None, FrontDoorError(
                404, "unknown_request", f"cancel: no request with request_id {target!r} is in flight on this "
                                        "connection (it may have finished already)")))
            return
        connection.cancelled.add(target)
        task.cancel()

    def _parse_request(self, connection: _Connection, payload: dict) -> tuple[str, dict, Hints]:
        given = payload.get("request_id")
        if given is not None:
            try:
                parse_hints({"request_id": given})
            except FrontDoorError as error:
                raise _Rejected(None, error) from None
            given = given.strip()
            if given in connection.tasks:
                raise _Rejected(None, FrontDoorError(
                    409, "duplicate_request_id", f"request_id {given!r} is already in flight on this connection: "
                                                 "give each concurrent request its own id"))
        request_id = given or new_request_id()
        unknown = sorted(set(payload) - ALLOWED_FIELDS)
        if unknown:
            raise _Rejected(request_id, FrontDoorError(
                400, "unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: "
                                      + ", ".join(sorted(ALLOWED_FIELDS | {'cancel'}))))
        model = payload.get("model")
        if model is None or (isinstance(model, str) and not model.strip()):
            raise _Rejected(request_id, FrontDoorError(
                400, "missing_model", "field 'model' is required: name the model to run, e.g. \"llama3.2\""))
        if not isinstance(model, str):
            raise _Rejected(request_id, FrontDoorError(
                400, "invalid_model", f"field 'model' must be a string, got {type(model).__name__}"))
        has_prompt, has_messages = "prompt" in payload, "messages" in payload
        if has_prompt == has_messages:
            raise _Rejected(request_id, FrontDoorError(
                400, "missing_input" if not has_prompt else "invalid_message",
                "give exactly one of 'prompt' (a string, for generate) or 'messages' (a list, for chat)"))
        if has_prompt and not isinstance(payload["prompt"], str):
            raise _Rejected(request_id, FrontDoorError(
                400, "invalid_field", f"field 'prompt' must be a string, got {type(payload['prompt']).__name__}"))
        if has_messages and not (isinstance(payload["messages"], list)
                                 and all(isinstance(m, dict) for m in payload["messages"])):
            raise _Rejected(request_id, FrontDoorError(
                400, "invalid_field", "field 'messages' must be a list of message objects ({\"role\", \"content\"})"))
        options = payload.get("options")
        if options is not None and not isinstance(options, dict):
            raise _Rejected(request_id, FrontDoorError(
                400, "invalid_field", f"field 'options' must be an object, got {type(options).__name__}"))
        try:
            hints = parse_hints({k: payload.get(k) for k in HINT_FIELDS if k != "request_id"})
        except FrontDoorError as error:
            raise _Rejected(request_id, error) from None
        if hints.client_id is None and connection.client_id:
            hints = dataclasses.replace(hints, client_id=connection.client_id)
        hints = dataclasses.replace(hints, request_id=request_id)
        body = {k: payload[k] for k in BODY_FIELDS if k in payload}
        body["model"] = model.strip()
        return request_id, body, hints

    async def _run(self, connection: _Connection, request_id: str, body: dict, hints: Hints) -> None:
        try:
            async with contextlib.aclosing(self.client.generate(body, hints, base_url=connection.base_url)) as events:
                async for event in events:
                    await connection.send(_event_chunk(request_id, event))
        except FrontDoorError as error:
            await connection.send(_error_chunk(request_id, error))
        except asyncio.CancelledError:
            if request_id in connection.cancelled and not connection.closing:
                await connection.send(_chunk(request_id, done=True, error="cancelled", code="cancelled", status=499))
                return  # the client asked for it: this task ends normally
            raise
        except Exception:  # a bug: say so on this request only, keep the socket
            log.exception(json.dumps({"event": "websocket_request_failed", "request_id": request_id}))
            await connection.send(_error_chunk(request_id, FrontDoorError(
                500, "internal_error", f"internal error in the proxy (request {request_id})")))
        finally:
            connection.tasks.pop(request_id, None)
            connection.cancelled.discard(request_id)


class _Rejected(Exception):
    def __init__(self, request_id: str | None, error: FrontDoorError):
        super().__init__(error.message)
        self.request_id = request_id
        self.error = error


def websocket_handler(base_url: Callable[[], str] | None = None, **kwargs) -> WebSocketDoor:
    """A WebSocketDoor; call `.install(app)` (route, shutdown and cleanup hooks) on the router's app."""
    return WebSocketDoor(base_url, **kwargs)
