"""gRPC front door (ollamaproxy.v1.InferenceRouter): each call is re-sent as loopback HTTP to the router, no side door."""

# Generate, GenerateStream and Embed are POSTed to the router's own HTTP listener (/api/generate,
# /api/chat, /api/embed) with the request's Routing annotations as routing headers, through one
# pooled client session (see ollamaproxy.frontdoors): the same gates, scheduler queue, pause,
# breakers, model pins, failover and request log as HTTP. A cancelled or expired call closes its
# HTTP request, so the router cancels upstream and frees the slot. The router's HTTP errors map to
# gRPC status codes (400 INVALID_ARGUMENT, 403 PERMISSION_DENIED, 404 NOT_FOUND, 409
# FAILED_PRECONDITION, 503 UNAVAILABLE, ...), with the router's message as details and its error
# code in the trailing metadata `ollamaproxy-error-code`. ListBackends and HealthCheck only read
# state. Loopback only unless `allow_remote` (the listener has no authentication and no TLS).
# Needs the `grpc` extra: grpcio, grpcio-reflection, protobuf.

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging

import grpc
from google.protobuf import json_format
from grpc import aio
from grpc_reflection.v1alpha import reflection

from ollamaproxy import __version__
from ollamaproxy.config import is_loopback_host
from ollamaproxy.frontdoors import (
    FrontDoorError,
    GenerateEvent,
    Hints,
    LoopbackClient,
    parse_hints,
    router_base_url,
)
from ollamaproxy.frontdoors._proto import ollamaproxy_pb2 as pb
from ollamaproxy.frontdoors._proto import ollamaproxy_pb2_grpc as pb_grpc
from ollamaproxy.routing.headers import new_request_id

__all__ = ["SERVICE_NAME", "GrpcServer", "grpc_status_for", "start_grpc"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["InferenceRouter"].full_name
ERROR_CODE_KEY = "ollamaproxy-error-code"
log = logging.getLogger("ollamaproxy.frontdoors.grpc")

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
_PRIORITY = {
    pb.PRIORITY_BEST_EFFORT: "best-effort",
    pb.PRIORITY_NORMAL: "normal",
    pb.PRIORITY_HIGH: "high",
    pb.PRIORITY_CRITICAL: "critical",
}


def grpc_status_for(http_status: int) -> grpc.StatusCode:
    """The gRPC status code for an HTTP status the router answered."""
    if http_status in _STATUS:
        return _STATUS[http_status]
    if 400 <= http_status < 500:
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.UNKNOWN


def _peer_address(peer: str) -> str | None:
    """`ipv4:127.0.0.1:5000` / `ipv6:[::1]:5000` -> the address, as HTTP's client id is the remote address."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return None


def _plain(value):
    """Struct numbers arrive as floats: 5.0 -> 5, so integer options stay integers in the JSON body."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _stats(event: GenerateEvent | None) -> pb.Stats:
    if event is None:
        return pb.Stats()
    return pb.Stats(ttft_ms=event.ttft_ms or 0.0, total_time_ms=event.total_time_ms or 0.0,
                    prompt_tokens=event.prompt_tokens or 0, token_count=event.token_count or 0,
                    tokens_per_sec=event.tokens_per_sec or 0.0)


class _Servicer(pb_grpc.InferenceRouterServicer):
    def __init__(self, router, client: LoopbackClient):
        self.router = router
        self.client = client

    # ---- request conversion ----------------------------------------------------------

    @staticmethod
    def _hints(routing: pb.Routing, context: aio.ServicerContext) -> Hints:
        fields = {
            "request_id": routing.request_id or None,
            "client_id": routing.client_id or None,
            "target_backend": routing.target_backend or None,
            "latency_critical": routing.latency_critical,
            "power_efficient": routing.power_efficient,
            "max_latency_ms": routing.max_latency_ms if routing.HasField("max_latency_ms") else None,
            "max_power_watts": routing.max_power_watts if routing.HasField("max_power_watts") else None,
            "priority": _PRIORITY.get(routing.priority),
        }
        if routing.priority not in _PRIORITY and routing.priority != pb.PRIORITY_UNSPECIFIED:
            raise FrontDoorError(400, "invalid_field", f"routing.priority: unknown value {routing.priority}")
        hints = parse_hints(fields)
        if hints.client_id is None:
            hints = dataclasses.replace(hints, client_id=_peer_address(context.peer()))
        if hints.request_id is None:
            hints = dataclasses.replace(hints, request_id=new_request_id())
        return hints

    def _generate_call(self, request: pb.GenerateRequest, context) -> tuple[dict, Hints]:
        if request.prompt and request.messages:
            raise FrontDoorError(400, "invalid_field",
                                 "give either 'prompt' (generate) or 'messages' (chat), not both")
        body: dict = {"model": request.model}
        if request.messages:
            body["messages"] = [{"role": m.role, "content": m.content, **({"images": list(m.images)}
                                                                          if m.images else {})}
                                for m in request.messages]
        else:
            body["prompt"] = request.prompt
            if request.system:
                body["system"] = request.system
        if request.HasField("options"):
            body["options"] = _plain(json_format.MessageToDict(request.options))
        if request.keep_alive:
            body["keep_alive"] = request.keep_alive
        return body, self._hints(request.routing, context)

    @staticmethod
    async def _abort(context: aio.ServicerContext, error: FrontDoorError) -> None:
        await context.abort(grpc_status_for(error.status), error.message,
                            trailing_metadata=((ERROR_CODE_KEY, error.code),
                                               ("ollamaproxy-http-status", str(error.status))))

    # ---- inference -------------------------------------------------------------------

    async def Generate(self, request: pb.GenerateRequest, context: aio.ServicerContext) -> pb.GenerateReply:
        try:
            body, hints = self._generate_call(request, context)
            parts: list[str] = []
            final: GenerateEvent | None = None
            async with contextlib.aclosing(self.client.generate(body, hints)) as events:
                async for event in events:
                    parts.append(event.token)
                    if event.done:
                        final = event
        except FrontDoorError as error:
            await self._abort(context, error)
        assert final is not None  # generate() ends with its done event or raises
        return pb.GenerateReply(text="".join(parts), done=True, done_reason=final.done_reason or "",
                                backend=final.backend, routing_reason=final.routing_reason,
                                request_id=final.request_id, stats=_stats(final))

    async def GenerateStream(self, request: pb.GenerateRequest, context: aio.ServicerContext):
        try:
            body, hints = self._generate_call(request, context)
            async with contextlib.aclosing(self.client.generate(body, hints)) as events:
                async for event in events:
                    chunk = pb.GenerateChunk(token=event.token, done=event.done, backend=event.backend,
                                             routing_reason=event.routing_reason, request_id=event.request_id)
                    if event.done:
                        chunk.done_reason = event.done_reason or ""
                        chunk.stats.CopyFrom(_stats(event))
                    yield chunk
        except FrontDoorError as error:
            await self._abort(context, error)

    async def Embed(self, request: pb.EmbedRequest, context: aio.ServicerContext) -> pb.EmbedReply:
        try:
            body: dict = {"model": request.model, "input": list(request.input)}
            if request.HasField("options"):
                body["options"] = _plain(json_format.MessageToDict(request.options))
            if request.HasField("truncate"):
                body["truncate"] = request.truncate
            if request.HasField("dimensions"):
                body["dimensions"] = request.dimensions
            if request.keep_alive:
                body["keep_alive"] = request.keep_alive
            result = await self.client.embed(body, self._hints(request.routing, context))
        except FrontDoorError as error:
            await self._abort(context, error)
        return pb.EmbedReply(embeddings=[pb.Embedding(values=v) for v in result.embeddings],
                             backend=result.backend, routing_reason=result.routing_reason,
                             request_id=result.request_id, prompt_tokens=result.prompt_tokens or 0,
                             total_time_ms=result.total_time_ms)

    # ---- state -----------------------------------------------------------------------

    async def ListBackends(self, request: pb.ListBackendsRequest, context) -> pb.ListBackendsReply:
        router = self.router
        backends = []
        for backend_id, state in router.registry.states.items():
            info = router.control.backend(backend_id)
            backends.append(pb.Backend(
                id=backend_id, kind=info["kind"], hardware=info["hardware"], url=info["url"],
                health=info["health"], health_reason=info["health_reason"], enabled=info["enabled"],
                in_flight=info["in_flight"], capacity=info["capacity"], queued=info["queued"],
                models=info["models"], loaded_models=info["loaded_models"],
                pinned_models=list(state.config.models), breaker=info["breaker"],
                breaker_reason=info["breaker_reason"]))
        return pb.ListBackendsReply(backends=backends)

    async def HealthCheck(self, request: pb.HealthCheckRequest, context) -> pb.HealthCheckReply:
        router = self.router
        now = router.registry.clock()
        states = list(router.registry.states.values())
        available = [s for s in states if s.available(now) and router.safety.blocked(s.id) is None]
        paused = router.safety.paused
        if paused:
            reason = f"paused: {router.safety.board.global_pause.reason}"
        elif not available:
            reason = "no backend can take new work: " + "; ".join(
                f"{s.id}: {s.describe(now)}" for s in states) if states else "no backends configured"
        else:
            reason = ""
        serving = not paused and bool(available)
        return pb.HealthCheckReply(
            status=pb.HealthCheckReply.SERVING if serving else pb.HealthCheckReply.NOT_SERVING,
            reason=reason, version=__version__, paused=paused, available_backends=len(available),
            total_backends=len(states), queue_depth=router.scheduler.queue_depth,
            in_flight=sum(router.scheduler.in_flight.values()), efficiency_mode=router.control.effective_mode())


def _split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT; port 0 picks a free port."""
    text = listen.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"[grpc] listen: expected HOST:PORT, got {listen!r}")
    return host, int(port)


@dataclasses.dataclass
class GrpcServer:
    """A running gRPC front door; `stop()` ends calls in flight (after `grace` seconds) and the pool."""

    server: aio.Server
    client: LoopbackClient
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def stop(self, grace: float | None = 1.0) -> None:
        try:
            await self.server.stop(grace)
        finally:
            await self.client.close()


async def start_grpc(router, listen: str, *, allow_remote: bool = False) -> GrpcServer:
    """Serve InferenceRouter (with server reflection) on `listen`; call after `router.start()`."""
    host, port = _split_listen(listen)
    if not allow_remote and not is_loopback_host(host):
        raise ValueError(f"[grpc] listen = {listen!r} is not a loopback address; the gRPC front door has no "
                         "authentication or TLS, so it listens on loopback only unless [grpc] allow_remote = true")
    max_bytes = router.config.server.max_body_bytes
    server = aio.server(options=[("grpc.max_receive_message_length", max_bytes),
                                 ("grpc.so_reuseport", 0)])
    client = LoopbackClient(lambda: router_base_url(router))
    pb_grpc.add_InferenceRouterServicer_to_server(_Servicer(router, client), server)
    reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"[grpc] cannot listen on {listen}: {error}") from None
    if bound == 0:
        raise OSError(f"[grpc] cannot listen on {listen}")
    await server.start()
    shown = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
    log.info(json.dumps({"event": "grpc_listening", "address": shown}))
    return GrpcServer(server, client, host, bound)
