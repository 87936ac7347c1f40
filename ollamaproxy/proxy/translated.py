"""Forwarding across APIs: an Ollama request to an OpenAI backend or the reverse, streams converted as they arrive."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
from aiohttp import web

from ollamaproxy.backends.health import Health, ProbeOutcome, classify_status
from ollamaproxy.config import BackendConfig
from ollamaproxy.proxy.errors import ApiError
from ollamaproxy.proxy.forward import BeforeFirstByteError, ForwardResult, pump, upstream_headers
from ollamaproxy.translate._common import rfc3339
from ollamaproxy.translate.requests import Translated, TranslationError, ollama_to_openai, openai_to_ollama
from ollamaproxy.translate.responses import (
    NdjsonToOpenAIStream,
    OpenAIStreamToNdjson,
    ollama_to_openai_response,
    openai_to_ollama_response,
)

UNMAPPED_HEADER = "X-Unmapped-Options"


def translate_request(path: str, payload: dict) -> Translated:
    """The request for the other API; ApiError(400) when it cannot be expressed there."""
    try:
        if path.startswith("/api/"):
            return ollama_to_openai(path, payload)
        return openai_to_ollama(path, payload)
    except TranslationError as error:
        raise ApiError(400, "untranslatable_request",
                       f"the only backends for this model speak the other API and this request cannot be "
                       f"translated: {error}") from None


def load_request_answer(path: str, model: str) -> dict | None:
    """Ollama's answer to an empty chat/generate (a model load request), which has no OpenAI equivalent."""
    done = {"model": model, "created_at": rfc3339(), "done": True, "done_reason": "load"}
    if path == "/api/chat":
        return {**done, "message": {"role": "assistant", "content": ""}}
    if path == "/api/generate":
        return {**done, "response": ""}
    return None


def is_load_request(path: str, payload: dict) -> bool:
    if path == "/api/chat":
        return not payload.get("messages")
    if path == "/api/generate":
        return not payload.get("prompt") and not payload.get("images")
    return False


async def forward_translated(request: web.Request, payload: dict, model: str, backend: BackendConfig,
                             session: aiohttp.ClientSession, headers: dict[str, str], *,
                             header_timeout: float, idle_seconds: float, request_id: str) -> ForwardResult:
    """Send a translated request and convert its answer back; BeforeFirstByteError allows failover."""
    path = request.path
    sent_at = time.monotonic()
    if is_load_request(path, payload):
        answer = load_request_answer(path, payload.get("model", model))
        return ForwardResult(web.json_response(answer, headers=headers), 200, first_byte_at=time.monotonic(),
                             sent_at=sent_at)
    translated = translate_request(path, payload)
    if translated.unmapped:
        headers[UNMAPPED_HEADER] = ",".join(translated.unmapped)
    out_headers = upstream_headers(request, backend)
    out_headers["Content-Type"] = "application/json"
    out_headers.pop("Accept-Encoding", None)  # converted bodies are re-encoded by us, so ask for plain ones
    started_ns = time.monotonic_ns()
    try:
        async with asyncio.timeout(header_timeout):
            try:
                upstream = await session.request("POST", backend.url + translated.path, data=translated.body,
                                                 headers=out_headers)
            except aiohttp.ServerDisconnectedError:
                # A pooled keep-alive connection the backend had already closed: the request never
                # reached it, so one immediate retry on a fresh connection is safe.
                upstream = await session.request("POST", backend.url + translated.path, data=translated.body,
                                                 headers=out_headers)
    except TimeoutError:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"no response headers within {header_timeout:g}s")) from None
    except (aiohttp.ClientConnectionError, OSError) as error:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"connection failed: {type(error).__name__}")) from None
    try:
        if upstream.status in (429, 503):
            body = await upstream.read()
            raise BeforeFirstByteError(classify_status(upstream.status, upstream.headers.get("Retry-After"),
                                                       time.time()), upstream.status, body)
        content_type = upstream.headers.get("Content-Type", "")
        streaming = content_type.startswith(("text/event-stream", "application/x-ndjson"))
        if upstream.status != 200 or not streaming:
            return await _whole(request, upstream, model, headers, sent_at, started_ns, request_id)
        return await _stream(request, upstream, model, headers, sent_at, started_ns, request_id,
                             translated.include_usage, idle_seconds)
    finally:
        upstream.close()


async def _whole(request: web.Request, upstream: aiohttp.ClientResponse, model: str, headers: dict[str, str],
                 sent_at: float, started_ns: int, request_id: str) -> ForwardResult:
    path = request.path
    try:
        raw = await upstream.read()
    except (aiohttp.ClientError, OSError) as error:
        raise BeforeFirstByteError(ProbeOutcome(Health.DOWN, f"body read failed: {type(error).__name__}")) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"error": raw[:500].decode(errors="replace") or f"HTTP {upstream.status}"}
    if not isinstance(body, dict):
        body = {"error": "backend answer is not a JSON object"}
    if path.startswith("/api/"):
        answer = openai_to_ollama_response(path, model, body, started_ns=started_ns,
                                           total_ns=time.monotonic_ns() - started_ns)
    else:
        answer = ollama_to_openai_response(path, model, body, created=int(time.time()), request_id=request_id)
    status = upstream.status if upstream.status != 200 or "error" not in answer else 502
    response = web.json_response(answer, status=status, headers=headers)
    tokens = answer.get("eval_count") if path.startswith("/api/") else (answer.get("usage") or {}).get("completion_tokens")
    result = ForwardResult(response, status, len(response.body), time.monotonic(), sent_at=sent_at)
    if isinstance(tokens, int) and status == 200 and isinstance(answer.get("eval_duration"), int) and answer["eval_duration"] > 0:
        result.reported = (tokens, answer["eval_duration"] / 1e9)
    return result


async def _stream(request: web.Request, upstream: aiohttp.ClientResponse, model: str, headers: dict[str, str],
                  sent_at: float, started_ns: int, request_id: str, include_usage: bool,
                  idle_seconds: float) -> ForwardResult:
    path = request.path
    if path.startswith("/api/"):
        converter = OpenAIStreamToNdjson(path, model, started_ns=started_ns)
        headers["Content-Type"] = "application/x-ndjson"
        separator = b"\n"
    else:
        converter = NdjsonToOpenAIStream(path, model, request_id=request_id, created=int(time.time()),
                                         include_usage=include_usage)
        headers["Content-Type"] = "text/event-stream"
        headers["X-Accel-Buffering"] = "no"
        headers["Cache-Control"] = "no-cache"
        separator = b"\n\n"
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(request)
    result = ForwardResult(response, 200, streamed=True, sent_at=sent_at)
    await pump(upstream, response, result, separator, idle_seconds, converter.feed)
    tail = converter.finish()  # the final done line, or an error line in the client's format
    if tail:
        await response.write(tail)
        result.bytes_sent += len(tail)
        result.token_events += tail.count(separator)
    if result.first_byte_at is None:
        result.first_byte_at = time.monotonic()
    if converter.error and result.outcome == "ok":
        result.outcome = "backend_stream_error"
    await response.write_eof()
    return result


__all__ = ["forward_translated", "UNMAPPED_HEADER"]
