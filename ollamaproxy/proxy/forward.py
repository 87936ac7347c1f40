"""Forwarding one request to one backend: body byte for byte, streams passed through as they arrive."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ollamaproxy.backends.health import Health, ProbeOutcome, classify_status
from ollamaproxy.backends.registry import backend_auth_headers
from ollamaproxy.config import BackendConfig
from ollamaproxy.proxy.errors import stream_error_line

# Hop-by-hop headers (RFC 9110 7.6.1) and ones aiohttp sets itself; never copied across.
_HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
    "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
))
_RESPONSE_SKIP = _HOP_BY_HOP | {"date", "server"}
# Routing headers meant for the proxy; the backend has no use for them.
_ROUTING_HEADERS = frozenset(h.lower() for h in (
    "X-Target-Backend", "X-Latency-Critical", "X-Power-Efficient", "X-Max-Latency-Ms",
    "X-Max-Power-Watts", "X-Priority", "X-Media-Type", "X-Client-ID",
))
_STREAM_TYPES = ("application/x-ndjson", "text/event-stream")
_FAILOVER_STATUSES = (429, 503)


class BeforeFirstByteError(Exception):
    """The backend failed before anything reached the client: the request may move to another backend."""

    def __init__(self, outcome: ProbeOutcome, status: int | None = None, body: bytes = b""):
        super().__init__(outcome.reason)
        self.outcome = outcome
        self.status = status
        self.body = body


@dataclass
class ForwardResult:
    response: web.StreamResponse
    status: int
    bytes_sent: int = 0
    first_byte_at: float | None = None
    outcome: str = "ok"
    backend_failure: ProbeOutcome | None = None
    streamed: bool = False
    sent_at: float = 0.0                 # when the request went to the backend
    last_chunk_at: float | None = None
    token_events: int = 0                # NDJSON lines / SSE events seen in a stream
    reported: tuple[int, float] | None = None  # (tokens, decode seconds) from a non-stream body

    def sample(self) -> tuple[float | None, int | None, float | None] | None:
        """(ttft_s, tokens, decode_s) for the latency estimates, or None when nothing was measured.

        Streams: TTFT is the wait for the first chunk; the rate counts events (one per token,
        less the final summary) over the time between first and last chunk. Plain bodies: the
        backend's own eval_count/eval_duration (Ollama) when present; TTFT is the rest.
        """
        if self.first_byte_at is None:
            return None
        if self.streamed:
            ttft = self.first_byte_at - self.sent_at
            tokens = self.token_events - 1
            decode = (self.last_chunk_at or self.first_byte_at) - self.first_byte_at
            return ttft, tokens, decode
        if self.reported is not None:
            tokens, decode = self.reported
            return max(0.0, self.first_byte_at - self.sent_at - decode), tokens, decode
        return None


def upstream_headers(request: web.Request, backend: BackendConfig) -> CIMultiDict:
    headers = CIMultiDict()
    for name, value in request.headers.items():
        lowered = name.lower()
        if lowered in _HOP_BY_HOP or lowered in _ROUTING_HEADERS:
            continue
        headers.add(name, value)
    auth = backend_auth_headers(backend)
    if auth:
        headers.update(auth)
    return headers


def _response_headers(upstream: aiohttp.ClientResponse, extra: dict[str, str]) -> CIMultiDict:
    headers = CIMultiDict()
    for name, value in upstream.headers.items():
        if name.lower() not in _RESPONSE_SKIP:
            headers.add(name, value)
    headers.update(extra)
    return headers


async def open_upstream(session: aiohttp.ClientSession, request: web.Request, backend: BackendConfig,
                        body: bytes, header_timeout: float) -> aiohttp.ClientResponse:
    """Send the request and wait for the backend's response headers (bounded by header_timeout)."""
    url = backend.url + request.raw_path
    try:
        async with asyncio.timeout(header_timeout):
            upstream = await session.request(request.method, url, data=body,
                                             headers=upstream_headers(request, backend))
    except TimeoutError:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"no response headers within {header_timeout:g}s")) from None
    except (aiohttp.ClientConnectionError, OSError) as error:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"connection failed: {type(error).__name__}")) from None
    if upstream.status in _FAILOVER_STATUSES:
        try:
            error_body = await upstream.read()
        except (aiohttp.ClientError, OSError):
            error_body = b""
        upstream.release()
        outcome = classify_status(upstream.status, upstream.headers.get("Retry-After"), time.time())
        raise BeforeFirstByteError(outcome, upstream.status, error_body)
    return upstream


def _reported_tokens(payload: bytes) -> tuple[int, float] | None:
    """eval_count / eval_duration (ns) from an Ollama completion body, when it has them."""
    if len(payload) > 1_000_000 or b'"eval_count"' not in payload:
        return None
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    count, duration = body.get("eval_count"), body.get("eval_duration")
    if isinstance(count, int) and isinstance(duration, int) and duration > 0:
        return count, duration / 1e9
    return None


class _IdleWatchdog:
    """Closes an upstream stream that stays silent for `idle_seconds` (one timer per stream, not per chunk)."""

    def __init__(self, upstream: aiohttp.ClientResponse, idle_seconds: float):
        self.upstream = upstream
        self.idle_seconds = idle_seconds
        self.progress = 0          # bumped by the relay loop; the watchdog compares it between checks
        self.fired = False
        self._seen = -1
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(idle_seconds, self._check)

    def _check(self) -> None:
        if self.progress == self._seen:
            self.fired = True
            self.upstream.close()  # the relay loop's read then fails and reports the timeout
            return
        self._seen = self.progress
        self._handle = self._loop.call_later(self.idle_seconds, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


async def relay(request: web.Request, upstream: aiohttp.ClientResponse, extra_headers: dict[str, str],
                backend_id: str, sent_at: float, idle_seconds: float = 600.0) -> ForwardResult:
    """Copy the backend's response to the client: whole for plain bodies, chunk by chunk for streams."""
    content_type = upstream.headers.get("Content-Type", "")
    headers = _response_headers(upstream, extra_headers)
    if not content_type.startswith(_STREAM_TYPES):
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"body read failed: {type(error).__name__}")) from None
        response = web.Response(status=upstream.status, body=payload, headers=headers)
        return ForwardResult(response, upstream.status, len(payload), time.monotonic(), sent_at=sent_at,
                             reported=_reported_tokens(payload) if upstream.status == 200 else None)

    separator = b"\n"
    if content_type.startswith("text/event-stream"):
        separator = b"\n\n"
        headers["X-Accel-Buffering"] = "no"
        headers.setdefault("Cache-Control", "no-cache")
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    result = ForwardResult(response, upstream.status, streamed=True, sent_at=sent_at)
    events = 0
    sent = 0
    watchdog = _IdleWatchdog(upstream, idle_seconds)
    try:
        async for chunk in upstream.content.iter_any():
            if result.first_byte_at is None:
                result.first_byte_at = time.monotonic()
            watchdog.progress += 1
            await response.write(chunk)
            sent += len(chunk)
            events += chunk.count(separator)
        if watchdog.fired:
            raise TimeoutError
        result.last_chunk_at = time.monotonic()
    except ConnectionResetError:
        raise  # the client went away (writing to it failed): not the backend's fault
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as error:
        # The backend broke mid-stream: the status is already sent, so end the stream with an
        # in-band error line the client libraries understand instead of a silent truncation.
        reason = (f"silent for {idle_seconds:g}s" if watchdog.fired or isinstance(error, TimeoutError)
                  else type(error).__name__)
        result.outcome = "backend_failed_mid_stream"
        result.backend_failure = ProbeOutcome(Health.DOWN, f"stream broke: {reason}")
        await response.write(stream_error_line(request.path, f"backend {backend_id} failed mid-stream ({reason})"))
    finally:
        watchdog.cancel()
        result.bytes_sent = sent
        result.token_events = events
    if result.first_byte_at is None:
        result.first_byte_at = time.monotonic()
    await response.write_eof()
    return result


async def drain_then(upstream: aiohttp.ClientResponse, done) -> None:
    """Let an abandoned upstream request run to its end (cancel_on_disconnect = false), then call done()."""
    try:
        async for _chunk in upstream.content.iter_any():
            pass
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    finally:
        upstream.release()
        done()
