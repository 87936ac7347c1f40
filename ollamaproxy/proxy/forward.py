"""Forwarding one request to one backend: body byte for byte, streams passed through as they arrive."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ollamaproxy.backends.health import Health, ProbeOutcome, classify_status
from ollamaproxy.backends.registry import backend_auth_headers
from ollamaproxy.config import BackendConfig
from ollamaproxy.proxy.errors import stream_error_line
from ollamaproxy.proxy.upstream import Connection, Pool, UpstreamError

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


def _response_headers(pairs, extra: dict[str, str]) -> CIMultiDict:
    headers = CIMultiDict()
    for name, value in pairs:
        if name.lower() not in _RESPONSE_SKIP:
            headers.add(name, value)
    headers.update(extra)
    return headers


_SKIP_REQUEST = frozenset(h.encode() for h in _HOP_BY_HOP | _ROUTING_HEADERS)
_SKIP_REQUEST_WITH_KEY = _SKIP_REQUEST | {b"authorization"}


def _request_bytes(request: web.Request, backend: BackendConfig, host: bytes, prefix: bytes, body: bytes) -> bytes:
    """The request for the backend, head and body: the client's headers less hop-by-hop and routing ones."""
    skip = _SKIP_REQUEST_WITH_KEY if backend.api_key else _SKIP_REQUEST
    target = prefix + request.raw_path.encode("utf-8", "surrogateescape")
    lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (request.method.encode(), target, host)]
    for name, value in request.raw_headers:
        if name.lower() not in skip:
            lines.append(b"%s: %s\r\n" % (name, value))
    if backend.api_key:
        key = backend.api_key.encode()
        if b"\r" in key or b"\n" in key:
            raise ValueError(f"backend {backend.id}: api_key contains a line break")
        lines.append(b"Authorization: Bearer %s\r\n" % key)
    lines.append(b"Content-Length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


def _is_stream(status: int, content_type: str) -> bool:
    """Relay the body as it arrives? Streams yes; plain bodies and failover answers are read whole."""
    return content_type.startswith(_STREAM_TYPES) and status not in _FAILOVER_STATUSES


async def open_upstream(pool: Pool, request: web.Request, backend: BackendConfig,
                        body: bytes, header_timeout: float) -> Connection:
    """Send the request and wait for the backend's response headers (bounded by header_timeout).

    Plain bodies are read whole here, so any failure before the client sees a byte allows failover.
    The request goes over the backend's keep-alive pool (upstream.py), owned by the registry.
    """
    data = _request_bytes(request, backend, pool.host_header, pool.prefix, body)
    try:
        upstream = await pool.request(data, header_timeout, _is_stream)
    except TimeoutError:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"no response headers within {header_timeout:g}s")) from None
    except OSError as error:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"connection failed: {type(error).__name__}")) from None
    except UpstreamError as error:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, str(error))) from None
    if upstream.status in _FAILOVER_STATUSES:
        upstream.release()
        outcome = classify_status(upstream.status, upstream.get("Retry-After"), time.time())
        raise BeforeFirstByteError(outcome, upstream.status, upstream.body)
    return upstream


# Ollama ends a completion with these two: as the last members before the final brace they are top-level.
_EVAL_PAIR = re.compile(rb'"eval_count"\s*:\s*(\d+)\s*,\s*"eval_duration"\s*:\s*(\d+)\s*}\s*\Z')


def _reported_tokens(payload: bytes) -> tuple[int, float] | None:
    """eval_count / eval_duration (ns) from an Ollama completion body, when it has them."""
    if len(payload) > 1_000_000 or b'"eval_count"' not in payload:
        return None
    found = _EVAL_PAIR.search(payload, max(0, len(payload) - 200))
    if found:
        count, duration = int(found[1]), int(found[2])
    else:  # another layout: parse it properly
        try:
            body = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        count, duration = body.get("eval_count"), body.get("eval_duration")
        if not isinstance(count, int) or not isinstance(duration, int):
            return None
    if duration > 0:
        return count, duration / 1e9
    return None


class _IdleWatchdog:
    """Closes an upstream stream that stays silent for `idle_seconds` (one timer per stream, not per chunk)."""

    def __init__(self, upstream, idle_seconds: float):
        self.upstream = upstream
        self.idle_seconds = idle_seconds
        self.progress = 0          # bumped per read (by the Connection itself, or by the relay loop)
        self.fired = False
        self._counter = upstream if isinstance(upstream, Connection) else self
        self._seen = -1
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(idle_seconds, self._check)

    def _check(self) -> None:
        progress = self._counter.progress
        if progress == self._seen:
            self.fired = True
            self.upstream.close()  # the relay's wait then fails and reports the timeout
            return
        self._seen = progress
        self._handle = self._loop.call_later(self.idle_seconds, self._check)

    def cancel(self) -> None:
        self._handle.cancel()


def _stream_separator(content_type: str, headers: CIMultiDict) -> bytes:
    if content_type.startswith("text/event-stream"):
        headers["X-Accel-Buffering"] = "no"
        headers.setdefault("Cache-Control", "no-cache")
        return b"\n\n"
    return b"\n"


async def relay(request: web.Request, upstream: Connection | aiohttp.ClientResponse, extra_headers: dict[str, str],
                backend_id: str, sent_at: float, idle_seconds: float = 600.0) -> ForwardResult:
    """Copy the backend's response to the client: whole for plain bodies, as it arrives for streams."""
    if isinstance(upstream, aiohttp.ClientResponse):
        return await _relay_client_response(request, upstream, extra_headers, backend_id, sent_at, idle_seconds)
    headers = _response_headers(upstream.headers, extra_headers)
    status = upstream.status
    if not upstream.streaming:
        payload = upstream.body
        response = web.Response(status=status, body=payload, headers=headers)
        # Sent here, not by aiohttp after the handler returns: the bookkeeping that follows (slot
        # release, estimates, the request log) then runs while the answer is on its way to the client.
        await response.prepare(request)
        await response.write_eof()
        return ForwardResult(response, status, len(payload), time.monotonic(), sent_at=sent_at,
                             reported=_reported_tokens(payload) if status == 200 else None)

    separator = _stream_separator(upstream.get("Content-Type", ""), headers)
    response = web.StreamResponse(status=status, headers=headers)
    writer = await response.prepare(request)
    if request.transport is None or request.transport.is_closing():
        raise ConnectionResetError("the client went away")
    result = ForwardResult(response, status, streamed=True, sent_at=sent_at)
    watchdog = _IdleWatchdog(upstream, idle_seconds)
    try:
        # The Connection writes each read straight to the client's transport (chunked framing
        # passed through); this task wakes only at the end of the stream.
        await upstream.relay_to(request.transport, getattr(writer, "chunked", False), separator, writer.drain)
        result.last_chunk_at = upstream.finished_at
    except UpstreamError as error:
        # The backend broke mid-stream: the status is already sent, so end the stream with an
        # in-band error line the client libraries understand instead of a silent truncation.
        reason = f"silent for {idle_seconds:g}s" if watchdog.fired else str(error)
        result.outcome = "backend_failed_mid_stream"
        result.backend_failure = ProbeOutcome(Health.DOWN, f"stream broke: {reason}")
        await response.write(stream_error_line(request.path, f"backend {backend_id} failed mid-stream ({reason})"))
    finally:
        watchdog.cancel()
        result.bytes_sent = upstream.payload_bytes
        result.token_events = upstream.events
        result.first_byte_at = upstream.first_body_at
    if result.first_byte_at is None:
        result.first_byte_at = time.monotonic()
    await response.write_eof()
    return result


async def _relay_client_response(request: web.Request, upstream: aiohttp.ClientResponse,
                                 extra_headers: dict[str, str], backend_id: str, sent_at: float,
                                 idle_seconds: float) -> ForwardResult:
    """relay() for an aiohttp ClientResponse (requests not sent through open_upstream)."""
    content_type = upstream.headers.get("Content-Type", "")
    headers = _response_headers(upstream.headers.items(), extra_headers)
    if not content_type.startswith(_STREAM_TYPES):
        try:
            payload = await upstream.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"body read failed: {type(error).__name__}")) from None
        response = web.Response(status=upstream.status, body=payload, headers=headers)
        return ForwardResult(response, upstream.status, len(payload), time.monotonic(), sent_at=sent_at,
                             reported=_reported_tokens(payload) if upstream.status == 200 else None)

    separator = _stream_separator(content_type, headers)
    response = web.StreamResponse(status=upstream.status, headers=headers)
    await response.prepare(request)
    result = ForwardResult(response, upstream.status, streamed=True, sent_at=sent_at)
    reason = await pump(upstream, response, result, separator, idle_seconds)
    if reason is not None:
        await response.write(stream_error_line(request.path, f"backend {backend_id} failed mid-stream ({reason})"))
    if result.first_byte_at is None:
        result.first_byte_at = time.monotonic()
    await response.write_eof()
    return result


async def pump(upstream: aiohttp.ClientResponse, response: web.StreamResponse, result: ForwardResult,
               separator: bytes, idle_seconds: float,
               transform: Callable[[bytes], bytes] | None = None) -> str | None:
    """Copy an aiohttp upstream stream to the client (through `transform`) as it arrives.

    Returns None when the stream ended cleanly, else why it broke (the result then records the
    backend failure; the caller ends the stream in the client's format). A client that went away
    raises ConnectionResetError: not the backend's fault.
    """
    sent = events = 0
    watchdog = _IdleWatchdog(upstream, idle_seconds)
    try:
        async for chunk in upstream.content.iter_any():
            watchdog.progress += 1
            out = transform(chunk) if transform is not None else chunk
            if out:
                if result.first_byte_at is None:
                    result.first_byte_at = time.monotonic()
                await response.write(out)
                sent += len(out)
                events += out.count(separator)
        if watchdog.fired:
            raise TimeoutError
        result.last_chunk_at = time.monotonic()
        return None
    except ConnectionResetError:
        raise
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as error:
        reason = (f"silent for {idle_seconds:g}s" if watchdog.fired or isinstance(error, TimeoutError)
                  else type(error).__name__)
        result.outcome = "backend_failed_mid_stream"
        result.backend_failure = ProbeOutcome(Health.DOWN, f"stream broke: {reason}")
        return reason
    finally:
        watchdog.cancel()
        result.bytes_sent += sent
        result.token_events += events


async def drain_then(upstream: Connection | aiohttp.ClientResponse, done) -> None:
    """Let an abandoned upstream request run to its end (cancel_on_disconnect = false), then call done()."""
    try:
        if isinstance(upstream, Connection):
            await upstream.detach()
        else:
            async for _chunk in upstream.content.iter_any():
                pass
    except (aiohttp.ClientError, UpstreamError, OSError, TimeoutError):
        pass
    finally:
        upstream.release()
        done()
