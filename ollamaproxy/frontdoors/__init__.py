"""Front doors (WebSocket, gRPC) reach inference only as loopback HTTP clients of the router: no side door."""

# Every request that arrives through a front door is sent, as an ordinary HTTP request, to the
# router's own listener (/api/generate, /api/chat or /api/embed) with its routing annotations as
# the routing headers (X-Priority, X-Target-Backend, ...). So it meets exactly the gates, scheduler
# queue, breakers, pause, model pins, failover and request log that HTTP clients meet. One pooled
# aiohttp.ClientSession per front door carries these requests, and the NDJSON answer is turned into
# the front door's chunks. Cancelling a front-door request closes its HTTP request: the router then
# cancels the upstream request and frees the slot (or drops the queue entry).

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ollamaproxy.routing.queue import parse_priority

__all__ = [
    "EmbedResult",
    "FrontDoorError",
    "GenerateEvent",
    "Hints",
    "LoopbackClient",
    "parse_hints",
    "router_base_url",
]

_ID_MAX = 128


class FrontDoorError(Exception):
    """A request refused or failed: the router's HTTP status, its machine code and a readable message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Hints:
    """Routing annotations of one front-door request; each becomes the routing header of its name."""

    request_id: str | None = None
    client_id: str | None = None
    target_backend: str | None = None
    latency_critical: bool = False
    power_efficient: bool = False
    max_latency_ms: float | None = None
    max_power_watts: float | None = None
    priority: str | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.request_id is not None:
            headers["X-Request-ID"] = self.request_id
        if self.client_id is not None:
            headers["X-Client-ID"] = self.client_id
        if self.target_backend is not None:
            headers["X-Target-Backend"] = self.target_backend
        if self.latency_critical:
            headers["X-Latency-Critical"] = "true"
        if self.power_efficient:
            headers["X-Power-Efficient"] = "true"
        if self.max_latency_ms is not None:
            headers["X-Max-Latency-Ms"] = repr(float(self.max_latency_ms))
        if self.max_power_watts is not None:
            headers["X-Max-Power-Watts"] = repr(float(self.max_power_watts))
        if self.priority is not None:
            headers["X-Priority"] = self.priority
        return headers


def _bad(field_name: str, value: Any, expected: str) -> FrontDoorError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return FrontDoorError(400, "invalid_field", f"field {field_name!r}: {shown} is not allowed; expected {expected}")


def _identifier(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > _ID_MAX \
            or not value.strip().isprintable():
        raise _bad(name, value, f"a string of 1-{_ID_MAX} printable characters")
    return value.strip()


def _flag(fields: Mapping[str, Any], name: str) -> bool:
    value = fields.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(name, value, "true or false")
    return value


def _positive(fields: Mapping[str, Any], name: str, unit: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _bad(name, value, f"a positive number of {unit}")
    return float(value)


def parse_hints(fields: Mapping[str, Any]) -> Hints:
    """Validate routing fields named as in the WebSocket protocol; FrontDoorError(400) names the bad one.

    The router validates the resulting headers once more (the same gate as HTTP); this check only
    makes the error name the field the client actually sent.
    """
    priority = fields.get("priority")
    if priority is not None:
        if isinstance(priority, bool) or not isinstance(priority, (str, int)):
            raise _bad("priority", priority, "best-effort, low, normal, high, critical, or 0-3")
        try:
            priority = parse_priority(str(priority)).name.lower().replace("_", "-")
        except ValueError:
            raise _bad("priority", priority, "best-effort, low, normal, high, critical, or 0-3") from None
    return Hints(
        request_id=_identifier(fields, "request_id"),
        client_id=_identifier(fields, "client_id"),
        target_backend=_identifier(fields, "target_backend"),
        latency_critical=_flag(fields, "latency_critical"),
        power_efficient=_flag(fields, "power_efficient"),
        max_latency_ms=_positive(fields, "max_latency_ms", "milliseconds"),
        max_power_watts=_positive(fields, "max_power_watts", "watts"),
        priority=priority,
    )


def router_base_url(router) -> str:
    """The router's own HTTP listener as a loopback-reachable URL (a wildcard bind maps to loopback)."""
    host, port = router.addresses[0][:2]
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass
class GenerateEvent:
    """One token (done false) or the end of a generation (done true, with the stats)."""

    token: str
    done: bool
    request_id: str
    backend: str
    routing_reason: str
    done_reason: str | None = None
    ttft_ms: float | None = None
    total_time_ms: float | None = None
    prompt_tokens: int | None = None
    token_count: int | None = None
    tokens_per_sec: float | None = None


@dataclass
class EmbedResult:
    embeddings: list[list[float]]
    request_id: str
    backend: str
    routing_reason: str
    prompt_tokens: int | None = None
    total_time_ms: float = 0.0


@dataclass
class _Call:
    """What the router said about the routing of one answered request."""

    request_id: str = ""
    backend: str = ""
    routing_reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class LoopbackClient:
    """A pooled HTTP client to the router's own listener; `base_url` is read per request unless one is given."""

    def __init__(self, base_url: Callable[[], str] | None = None):
        self._base_url = base_url
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No pool cap: the router's scheduler is the one queue, and it must see every request at once.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _open(self, path: str, body: dict, hints: Hints,
                    base_url: str | None) -> tuple[aiohttp.ClientResponse, _Call]:
        if base_url is None:
            if self._base_url is None:
                raise RuntimeError("LoopbackClient needs a base_url")
            base_url = self._base_url()
        headers = hints.headers()
        headers["Content-Type"] = "application/json"
        try:
            response = await self._client().post(base_url + path, data=json.dumps(body).encode(),
                                                  headers=headers)
        except (OSError, aiohttp.ClientError) as error:
            raise FrontDoorError(503, "router_unreachable", f"the router's HTTP listener did not answer: {error}") \
                from None
        call = _Call(response.headers.get("X-Request-ID", hints.request_id or ""),
                     response.headers.get("X-Backend-Used", ""), response.headers.get("X-Routing-Reason", ""))
        if response.status >= 400:
            try:
                raw = await response.read()
            except (OSError, aiohttp.ClientError):
                raw = b""
            finally:
                response.close()
            raise _error_from(response.status, raw)
        return response, call

    async def generate(self, body: dict, hints: Hints, *, base_url: str | None = None
                       ) -> AsyncIterator[GenerateEvent]:
        """Stream one generation (`messages` in body: /api/chat, else /api/generate) as events.

        Use under `contextlib.aclosing` so that leaving early closes the HTTP request at once.
        """
        chat = "messages" in body
        body = dict(body)
        body["stream"] = True
        started = time.monotonic()
        response, call = await self._open("/api/chat" if chat else "/api/generate", body, hints, base_url)
        completed = False
        first_token_at: float | None = None
        tokens = 0
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (OSError, aiohttp.ClientError) as error:
                    raise FrontDoorError(502, "backend_stream_failed", f"the answer broke off: {error}") from None
                if not line:
                    raise FrontDoorError(502, "backend_stream_failed",
                                         "the answer ended before its final chunk")
                line = line.strip()
                if not line:
                    continue
                try:
                    chunk = json.loads(line)
                except ValueError:
                    raise FrontDoorError(502, "backend_stream_failed",
                                         f"the answer held a line that is not JSON: {line[:80]!r}") from None
                if not isinstance(chunk, dict):
                    continue
                if "error" in chunk:
                    raise FrontDoorError(502, str(chunk.get("code") or "backend_stream_failed"),
                                         str(chunk["error"]))
                if chat:
                    message = chunk.get("message")
                    text = message.get("content") if isinstance(message, dict) else None
                else:
                    text = chunk.get("response")
                text = text if isinstance(text, str) else ""
                if text:
                    tokens += 1
                    if first_token_at is None:
                        first_token_at = time.monotonic()
                if not chunk.get("done"):
                    if text:
                        yield GenerateEvent(text, False, call.request_id, call.backend, call.routing_reason)
                    continue
                ended = time.monotonic()
                completed = True
                count = chunk.get("eval_count")
                count = count if isinstance(count, int) and not isinstance(count, bool) else tokens
                eval_ns = chunk.get("eval_duration")
                if isinstance(eval_ns, (int, float)) and eval_ns > 0 and count:
                    rate = count / (eval_ns / 1e9)
                elif first_token_at is not None and ended > first_token_at and count:
                    rate = count / (ended - first_token_at)
                else:
                    rate = 0.0
                prompt_tokens = chunk.get("prompt_eval_count")
                yield GenerateEvent(
                    text, True, call.request_id, call.backend, call.routing_reason,
                    done_reason=chunk.get("done_reason") if isinstance(chunk.get("done_reason"), str) else None,
                    ttft_ms=round(((first_token_at or ended) - started) * 1000, 3),
                    total_time_ms=round((ended - started) * 1000, 3),
                    prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
                    token_count=count, tokens_per_sec=round(rate, 3))
                return
        finally:
            if completed:
                response.release()
            else:
                response.close()  # closing tells the router to cancel upstream and free the slot

    async def embed(self, body: dict, hints: Hints, *, base_url: str | None = None) -> EmbedResult:
        started = time.monotonic()
        response, call = await self._open("/api/embed", body, hints, base_url)
        try:
            raw = await response.read()
        except (OSError, aiohttp.ClientError) as error:
            raise FrontDoorError(502, "backend_failed", f"the answer broke off: {error}") from None
        finally:
            response.close()
        try:
            payload = json.loads(raw)
            vectors = payload["embeddings"]
        except (ValueError, KeyError, TypeError):
            raise FrontDoorError(502, "bad_backend_answer", "the embedding answer is not valid JSON") from None
        prompt_tokens = payload.get("prompt_eval_count")
        return EmbedResult(vectors, call.request_id, call.backend, call.routing_reason,
                           prompt_tokens if isinstance(prompt_tokens, int) else None,
                           round((time.monotonic() - started) * 1000, 3))


def _error_from(status: int, raw: bytes) -> FrontDoorError:
    """The router's error body (Ollama shape: {"error": ..., "code": ...}) as a FrontDoorError."""
    code, message = f"http_{status}", raw.decode(errors="replace").strip() or f"HTTP {status}"
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):  # OpenAI shape, should a backend's own error pass through
            code = str(error.get("code") or error.get("type") or code)
            message = str(error.get("message") or message)
        elif error is not None:
            message = str(error)
            code = str(payload.get("code") or code)
    return FrontDoorError(status, code, message)
