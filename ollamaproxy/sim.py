"""Simulated Ollama / OpenAI-compatible inference backend for tests, demos and benchmarks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from aiohttp import web

__all__ = [
    "SIM_KINDS",
    "SIM_BEHAVIOUR",
    "SIM_STATS",
    "SIM_STATE",
    "SimBehaviour",
    "SimStats",
    "SimState",
    "create_sim_app",
    "serve_sim",
    "sim_text",
    "sim_embedding",
    "canonical_model_name",
]

SIM_KINDS = ("ollama", "openai")

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default keep_alive: 5m
DEFAULT_CONTEXT_LENGTH = 4096  # Ollama's default num_ctx
EMBED_DIMS = 8
STATS_KEEP = 100  # bodies/paths kept in SimStats

# Deterministic "model output": token i is WORDS[i % len(WORDS)] + " ".
WORDS = (
    "the sky looks blue because air scatters short light waves more than long "
    "ones so blue reaches our eyes from every part"
).split()
_TOKENS = [w + " " for w in WORDS]
_TOKENS_JSON = [json.dumps(t) for t in _TOKENS]
_NTOK = len(_TOKENS)

_JSON_CT = "application/json; charset=utf-8"
_NDJSON_CT = "application/x-ndjson"
_SSE_CT = "text/event-stream"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sim_text(n_tokens: int) -> str:
    """The text a sim generates for `n_tokens` tokens (same for every model and prompt)."""
    full, rest = divmod(max(0, n_tokens), _NTOK)
    return "".join(_TOKENS) * full + "".join(_TOKENS[:rest])


def canonical_model_name(name: str) -> str:
    """`llama3.2` -> `llama3.2:latest`; names that carry a tag are kept."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def sim_embedding(text: str, model: str, dims: int = EMBED_DIMS) -> list[float]:
    """Deterministic unit-length vector for (model, text)."""
    raw = hashlib.shake_256(f"{canonical_model_name(model).lower()}\0{text}".encode()).digest(dims)
    vals = [(b - 127.5) / 127.5 for b in raw]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [v / norm for v in vals]


# --------------------------------------------------------------------------- time helpers

from ollamaproxy.translate._common import rfc3339 as _rfc3339  # noqa: E402  (one timestamp format)

def _rfc3339_epoch(epoch_s: float) -> str:
    if math.isinf(epoch_s) or epoch_s > 253_402_300_000:  # "forever": Ollama shows a far-future date
        return "2318-01-01T00:00:00.000000000Z"
    return _rfc3339(int(epoch_s * 1_000_000_000))


_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DUR_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_keep_alive(value: Any) -> float:
    """keep_alive (seconds as number, or Go duration string like "5m") -> seconds; inf for negative."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool):
        raise _ApiError(400, f"invalid keep_alive: {value!r}")
    if isinstance(value, (int, float)):
        secs = float(value)
    elif isinstance(value, str):
        s = value.strip()
        try:
            secs = float(s)
        except ValueError:
            sign = -1.0 if s.startswith("-") else 1.0
            body = s.lstrip("+-")
            parts = _DUR_RE.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise _ApiError(400, f'time: invalid duration "{value}"') from None
            secs = sign * sum(float(n) * _DUR_UNIT[u] for n, u in parts)
    else:
        raise _ApiError(400, f"invalid keep_alive: {value!r}")
    return math.inf if secs < 0 else secs


# --------------------------------------------------------------------------- public knobs/counters


@dataclass
class SimBehaviour:
    """Mutable knobs; tests change them at run time (directly or via POST /_sim/behaviour)."""

    tokens_per_second: float = 50.0  # <= 0: no pacing at all
    first_token_ms: float = 0.0  # delay before the first token / the non-stream answer
    fail_status: int | None = None  # every POST inference request answers this (API-shaped error JSON)
    fail_count: int | None = None  # ...for this many requests, then both clear (None: until changed)
    retry_after: str | None = None  # Retry-After header on fail_status answers
    # streaming: abort the connection after this many chunks; non-stream generation: abort before
    # the answer when the value is <= the number of tokens (the stream would have lost its done chunk)
    crash_after_chunks: int | None = None
    hold: asyncio.Event | None = None  # inference handlers wait for it before the first byte
    health_status: int | None = None  # every GET/HEAD outside /_sim/ answers this status
    load_ms: float = 0.0  # extra delay when a request has to load a cold model
    max_loaded: int | None = None  # evict least recently used resident models beyond this
    watts: float = 10.0  # nominal power draw while generating (informational)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hold"}


@dataclass
class SimStats:
    """Counters a test reads."""

    requests: int = 0
    active: int = 0
    max_active: int = 0
    cancelled: int = 0
    completed: int = 0
    failed: int = 0  # answered with fail_status
    crashed: int = 0  # connection aborted by crash_after_chunks
    bodies: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("bodies")
        return d

    def reset(self) -> None:
        active = self.active
        for f in fields(self):
            setattr(self, f.name, [] if f.name in ("bodies", "paths") else 0)
        self.active = active
        self.max_active = active


@dataclass
class _ModelInfo:
    name: str  # canonical, with tag
    size: int
    digest: str
    family: str
    parameter_size: str
    parameter_count: int
    quantization_level: str
    embedding_only: bool
    native_context: int
    modified_at: str
    modified_epoch: int

    def details(self) -> dict[str, Any]:
        # docs/api.md "List Running Models" / "Show Model Information": details object
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


@dataclass
class _Resident:
    expires_at: float  # epoch seconds (inf = forever)
    context_length: int
    in_use: int = 0
    last_used: float = 0.0


def _model_info(name: str) -> _ModelInfo:
    digest = hashlib.sha256(name.encode()).hexdigest()
    h = int(digest[:12], 16)
    base = name.rsplit("/", 1)[-1]
    stem, _, tag = base.partition(":")
    m = re.match(r"[a-zA-Z]+", stem)
    family = (m.group(0).lower() if m else "llama") or "llama"
    m = re.search(r"(\d+(?:\.\d+)?)\s*([bBmM])\b", f"{tag} {stem}".replace("-", " ").replace("_", " "))
    if m:
        count = int(float(m.group(1)) * (1e9 if m.group(2).lower() == "b" else 1e6))
    else:
        count = 1_000_000_000 + h % 7_000_000_000
    if count >= 1e9:
        psize = f"{count / 1e9:.1f}B"
    else:
        psize = f"{count / 1e6:.2f}M"
    lname = name.lower()
    embedding_only = any(k in lname for k in ("embed", "minilm", "bge-", "bge:"))
    size = int(count * 0.5625) + 50_000_000 + h % 10_000_000  # ~Q4_K_M bytes per weight + overhead
    modified_epoch = 1_735_689_600 + h % 10_000_000  # 2025-01-01 + up to ~115 days
    return _ModelInfo(
        name=name,
        size=size,
        digest=digest,
        family=family,
        parameter_size=psize,
        parameter_count=count,
        quantization_level="F16" if embedding_only else "Q4_K_M",
        embedding_only=embedding_only,
        native_context=8192 if embedding_only else 32768,
        modified_at=_rfc3339(modified_epoch * 1_000_000_000 + h % 1_000_000_000),
        modified_epoch=modified_epoch,
    )


class _Shutdown(Exception):
    """The sim's app is shutting down: in-flight requests are dropped."""


class _ApiError(Exception):
    def __init__(self, status: int, message: str, etype: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.etype = etype


_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _error_response(api: str, status: int, message: str, etype: str | None = None,
                    headers: dict[str, str] | None = None) -> web.Response:
    if api == "openai":
        body = {"error": {"message": message,
                          "type": etype or _OPENAI_ERROR_TYPES.get(status, "api_error"),
                          "param": None, "code": None}}
    else:
        body = {"error": message}
    return web.Response(status=status, text=_dumps(body), content_type="application/json",
                        charset="utf-8", headers=headers)


def _failure_message(status: int) -> str:
    if status == 503:
        return "server busy, please try again.  maximum pending requests exceeded"
    try:
        from http import HTTPStatus

        phrase = HTTPStatus(status).phrase.lower()
    except ValueError:
        phrase = "error"
    return f"simulated failure: {status} {phrase}"


def _words(text: Any) -> int:
    if isinstance(text, str):
        return len(text.split())
    if isinstance(text, list):  # OpenAI content parts
        n = 0
        for part in text:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                n += len(part["text"].split())
            elif isinstance(part, str):
                n += len(part.split())
        return n
    return 0


def _int_or_none(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _ApiError(400, f"invalid {what}: {value!r}")
    return int(value)


# --------------------------------------------------------------------------- state


class SimState:
    """Everything one simulated backend knows; app[SIM_STATE]."""

    def __init__(self, name: str, models: list[str], *, tokens_per_second: float, watts: float,
                 loaded: list[str] | None, kind: str, version: str, default_tokens: int):
        if kind not in SIM_KINDS:
            raise ValueError(f"kind must be one of {SIM_KINDS}, got {kind!r}")
        self.name = name
        self.kind = kind
        self.version = version
        self.default_tokens = int(default_tokens)
        self.behaviour = SimBehaviour(tokens_per_second=float(tokens_per_second), watts=float(watts))
        self.stats = SimStats()
        self.models: dict[str, _ModelInfo] = {}
        for m in models:
            info = _model_info(canonical_model_name(m))
            self.models.setdefault(info.name.lower(), info)
        self.resident: dict[str, _Resident] = {}
        self.closing = asyncio.Event()  # set on app shutdown: held/streaming requests stop
        self._seq = 0
        initial = list(models[:1]) if loaded is None else list(loaded)
        now = time.time()
        for m in initial:
            info = self.models.get(canonical_model_name(m).lower())
            if info is None:
                raise ValueError(f"loaded model {m!r} is not in models")
            self.resident[info.name.lower()] = _Resident(now + DEFAULT_KEEP_ALIVE_S, DEFAULT_CONTEXT_LENGTH,
                                                         last_used=now)

    # -- models
    def lookup(self, name: str) -> _ModelInfo | None:
        return self.models.get(canonical_model_name(name).lower())

    def next_id(self) -> int:
        self._seq += 1
        return self._seq

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, r in self.resident.items() if r.in_use == 0 and r.expires_at <= now]:
            del self.resident[key]

    def loaded_models(self) -> list[str]:
        self._expire()
        return [self.models[k].name for k in self.resident]

    def acquire(self, info: _ModelInfo, num_ctx: int | None) -> bool:
        """Mark a model in use (loading it if needed); returns True when it was cold."""
        self._expire()
        key = info.name.lower()
        now = time.time()
        res = self.resident.get(key)
        cold = res is None
        if cold:
            limit = self.behaviour.max_loaded
            if limit is not None:
                idle = sorted((r.last_used, k) for k, r in self.resident.items() if r.in_use == 0)
                while len(self.resident) >= max(1, limit) and idle:
                    del self.resident[idle.pop(0)[1]]
            res = _Resident(now + DEFAULT_KEEP_ALIVE_S, num_ctx or DEFAULT_CONTEXT_LENGTH)
            self.resident[key] = res
        elif num_ctx:
            res.context_length = num_ctx
        res.in_use += 1
        res.last_used = now
        return cold

    def release(self, info: _ModelInfo, keep_alive: float) -> None:
        key = info.name.lower()
        res = self.resident.get(key)
        if res is None:
            return
        res.in_use = max(0, res.in_use - 1)
        now = time.time()
        res.last_used = now
        res.expires_at = now + keep_alive
        if keep_alive <= 0 and res.in_use == 0:
            del self.resident[key]

    def unload(self, info: _ModelInfo) -> None:
        res = self.resident.get(info.name.lower())
        if res is not None and res.in_use == 0:
            del self.resident[info.name.lower()]


SIM_BEHAVIOUR = web.AppKey("SIM_BEHAVIOUR", SimBehaviour)
SIM_STATS = web.AppKey("SIM_STATS", SimStats)
SIM_STATE = web.AppKey("SIM_STATE", SimState)


# --------------------------------------------------------------------------- request plumbing


@dataclass
class _Gen:
    model: str  # as the client spelled it (echoed back, like Ollama)
    info: _ModelInfo
    n: int
    limited: bool
    prompt_tokens: int
    stream: bool
    keep_alive: float
    num_ctx: int | None = None


def _parse_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise _ApiError(400, "missing request body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _ApiError(400, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _ApiError(400, f"invalid request: expected a JSON object, got {type(data).__name__}")
    return data


class _Handlers:
    def __init__(self, state: SimState):
        self.s = state

    # ---- generic inference wrapper --------------------------------------------------
    def inference(self, api: str, impl: Callable[[web.Request, bytes], Any]):
        state = self.s

        async def handler(request: web.Request) -> web.StreamResponse:
            stats = state.stats
            beh = state.behaviour
            stats.requests += 1
            stats.active += 1
            if stats.active > stats.max_active:
                stats.max_active = stats.active
            try:
                body = await request.read()
                stats.bodies.append(body)
                stats.paths.append(request.path)
                if len(stats.bodies) > STATS_KEEP:
                    del stats.bodies[:-STATS_KEEP]
                    del stats.paths[:-STATS_KEEP]
                status = beh.fail_status
                if status is not None:
                    count = beh.fail_count
                    if count is not None and count <= 0:
                        beh.fail_status = beh.fail_count = None
                    else:
                        if count is not None:
                            beh.fail_count = count - 1
                            if count - 1 <= 0:
                                beh.fail_status = beh.fail_count = None
                        stats.failed += 1
                        headers = {"Retry-After": str(beh.retry_after)} if beh.retry_after is not None else None
                        return _error_response(api, status, _failure_message(status), headers=headers)
                try:
                    return await impl(request, body)
                except _ApiError as exc:
                    return _error_response(api, exc.status, exc.message, exc.etype)
            except asyncio.CancelledError:
                stats.cancelled += 1
                raise
            except _Shutdown:
                stats.cancelled += 1
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=503)
            except ConnectionResetError:
                stats.cancelled += 1
                return web.Response(status=499)
            finally:
                stats.active -= 1

        return handler

    async def _before_first_byte(self, cold: bool) -> None:
        beh = self.s.behaviour
        hold = beh.hold
        if hold is not None and not hold.is_set():
            closing = self.s.closing
            waiters = [asyncio.ensure_future(hold.wait()), asyncio.ensure_future(closing.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
            if not hold.is_set():
                raise _Shutdown()
        if cold and beh.load_ms > 0:
            await asyncio.sleep(beh.load_ms / 1000.0)
        if beh.first_token_ms > 0:
            await asyncio.sleep(beh.first_token_ms / 1000.0)

    def _crash(self, request: web.Request) -> None:
        self.s.stats.crashed += 1
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def _crashes_before_answer(self, request: web.Request, n: int) -> bool:
        """Non-stream generation: crash_after_chunks=k <= n means the backend dies after k tokens,
        before the answer (which a stream would have ended with its done chunk) is written."""
        crash = self.s.behaviour.crash_after_chunks
        if crash is None or crash > n:
            return False
        await self._generate_time(max(0, crash))
        self._crash(request)
        return True

    async def _send_json(self, request: web.Request, obj: Any) -> web.StreamResponse:
        """Write a complete non-stream answer; counts completed / cancelled."""
        resp = web.Response(text=_dumps(obj), content_type="application/json", charset="utf-8")
        try:
            await resp.prepare(request)
            await resp.write_eof()
        except ConnectionResetError:
            self.s.stats.cancelled += 1
            return resp
        self.s.stats.completed += 1
        return resp

    async def _stream(self, request: web.Request, content_type: str, n: int,
                      token_chunk: Callable[[int], bytes], tail: Callable[[], list[bytes]]) -> web.StreamResponse:
        """Write n token chunks, paced by tokens_per_second, then the tail chunks."""
        beh = self.s.behaviour
        stats = self.s.stats
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        if content_type == _SSE_CT:
            resp.headers["Cache-Control"] = "no-cache"
        crash = beh.crash_after_chunks
        written = 0
        sleep = asyncio.sleep
        try:
            await resp.prepare(request)
            if crash is not None and crash <= 0:
                self._crash(request)
                return resp
            write = resp.write
            closing = self.s.closing
            for i in range(n):
                tps = beh.tokens_per_second
                if tps > 0:
                    await sleep(1.0 / tps)
                    if closing.is_set():
                        raise _Shutdown()
                await write(token_chunk(i))
                written += 1
                if crash is not None and written >= crash:
                    self._crash(request)
                    return resp
            for chunk in tail():
                await write(chunk)
                written += 1
                if crash is not None and written >= crash:
                    self._crash(request)
                    return resp
            await resp.write_eof()
        except ConnectionResetError:
            stats.cancelled += 1
            return resp
        stats.completed += 1
        return resp

    async def _generate_time(self, n: int) -> None:
        """Non-stream answers take as long as streaming the tokens would."""
        tps = self.s.behaviour.tokens_per_second
        if tps > 0 and n > 0:
            await asyncio.sleep(n / tps)

    def _durations(self, g: _Gen, t0: int, gen_start: int, cold: bool) -> dict[str, int]:
        tps = self.s.behaviour.tokens_per_second
        now = time.perf_counter_ns()
        if tps > 0:
            eval_ns = int(g.n * 1e9 / tps)
            prompt_ns = int(g.prompt_tokens * 1e9 / (tps * 20))
        else:
            eval_ns = max(1, now - gen_start) if g.n else 0
            prompt_ns = g.prompt_tokens * 1000
        load_ms = self.s.behaviour.load_ms
        load_ns = (max(int(load_ms * 1e6), 1_000_000) if cold else 100_000)
        total = max(now - t0, load_ns + prompt_ns + eval_ns)
        return {
            "total_duration": int(total),
            "load_duration": int(load_ns),
            "prompt_eval_count": int(g.prompt_tokens),
            "prompt_eval_duration": int(prompt_ns),
            "eval_count": int(g.n),
            "eval_duration": int(eval_ns),
        }

    # ---- common parsing --------------------------------------------------------------
    def _resolve(self, data: dict[str, Any], api: str) -> tuple[str, _ModelInfo]:
        model = data.get("model")
        if model is None and api == "ollama":
            model = data.get("name")  # older clients send "name"
        if model is None or model == "":
            if self.s.kind == "openai" and api == "openai" and self.s.models:
                info = next(iter(self.s.models.values()))  # llama.cpp serves its one model
                return info.name, info
            raise _ApiError(400, "model is required")
        if not isinstance(model, str):
            raise _ApiError(400, f"invalid model: {model!r}")
        info = self.s.lookup(model)
        if info is None:
            raise _ApiError(404, f'model "{model}" not found, try pulling it first')
        return model, info

    def _num_tokens(self, limit: Any, what: str) -> tuple[int, bool]:
        limit = _int_or_none(limit, what)
        if limit is None or limit < 0:  # Ollama: -1 = infinite, -2 = fill context
            return self.s.default_tokens, False
        return limit, True

    # ---- Ollama native API ---------------------------------------------------------------
    async def api_chat(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return await self._api_gen(request, body, chat=True)

    async def api_generate(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return await self._api_gen(request, body, chat=False)

    async def _api_gen(self, request: web.Request, body: bytes, chat: bool) -> web.StreamResponse:
        t0 = time.perf_counter_ns()
        data = _parse_body(body)
        model, info = self._resolve(data, "ollama")
        if info.embedding_only:
            raise _ApiError(400, f'"{model}" does not support {"chat" if chat else "generate"}')
        keep_alive = _parse_keep_alive(data.get("keep_alive"))
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise _ApiError(400, "invalid options: expected an object")
        num_ctx = _int_or_none(options.get("num_ctx"), "num_ctx")
        if chat:
            messages = data.get("messages") or []
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise _ApiError(400, "invalid messages: expected a list of message objects")
            empty = not messages
            prompt_tokens = sum(_words(m.get("content")) for m in messages)
        else:
            prompt = data.get("prompt") or ""
            if not isinstance(prompt, str):
                raise _ApiError(400, "invalid prompt: expected a string")
            empty = prompt == "" and not data.get("images")
            prompt_tokens = _words(prompt) + _words(data.get("system"))
        model_json = _dumps(model)
        if empty:  # docs/api.md "Load a model" / "Unload a model"
            if keep_alive <= 0:
                self.s.unload(info)
                reason = "unload"
            else:
                self.s.acquire(info, num_ctx)
                self.s.release(info, keep_alive)
                reason = "load"
            await self._before_first_byte(False)
            obj: dict[str, Any] = {"model": model, "created_at": _rfc3339()}
            if chat:
                obj["message"] = {"role": "assistant", "content": ""}
            else:
                obj["response"] = ""
            obj["done"] = True
            obj["done_reason"] = reason
            return await self._send_json(request, obj)
        n, limited = self._num_tokens(options.get("num_predict"), "num_predict")
        stream = data.get("stream")
        g = _Gen(model, info, n, limited, max(1, prompt_tokens), stream is not False, keep_alive, num_ctx)
        raw = bool(data.get("raw"))
        cold = self.s.acquire(info, num_ctx)
        try:
            await self._before_first_byte(cold)
            gen_start = time.perf_counter_ns()
            done_reason = "length" if limited else "stop"

            def final(content: str) -> dict[str, Any]:
                obj = {"model": model, "created_at": _rfc3339()}
                if chat:
                    obj["message"] = {"role": "assistant", "content": content}
                else:
                    obj["response"] = content
                obj["done"] = True
                obj["done_reason"] = done_reason
                if not chat and not raw:
                    obj["context"] = self._context(g)
                obj.update(self._durations(g, t0, gen_start, cold))
                return obj

            if not g.stream:
                if await self._crashes_before_answer(request, n):
                    return web.Response()
                await self._generate_time(n)
                return await self._send_json(request, final(sim_text(n)))

            pre = '{"model":' + model_json + ',"created_at":"'
            if chat:
                tails = ['","message":{"role":"assistant","content":' + t + '},"done":false}\n' for t in _TOKENS_JSON]
            else:
                tails = ['","response":' + t + ',"done":false}\n' for t in _TOKENS_JSON]
            now = _rfc3339

            def token_chunk(i: int) -> bytes:
                return (pre + now() + tails[i % _NTOK]).encode()

            def tail() -> list[bytes]:
                return [(_dumps(final("")) + "\n").encode()]

            return await self._stream(request, _NDJSON_CT, n, token_chunk, tail)
        finally:
            self.s.release(info, keep_alive)

    def _context(self, g: _Gen) -> list[int]:
        ids = [(zlib.crc32(str(i).encode()) % 32000) + 1 for i in range(g.prompt_tokens)]
        ids.extend(100 + (i % _NTOK) for i in range(g.n))
        return ids

    async def api_embed(self, request: web.Request, body: bytes) -> web.StreamResponse:
        t0 = time.perf_counter_ns()
        data = _parse_body(body)
        model, info = self._resolve(data, "ollama")
        keep_alive = _parse_keep_alive(data.get("keep_alive"))
        inp = data.get("input")
        if inp is None:
            texts: list[str] = []
        elif isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and all(isinstance(x, str) for x in inp):
            texts = list(inp)
        else:
            raise _ApiError(400, "invalid input type")
        dims = _int_or_none(data.get("dimensions"), "dimensions") or EMBED_DIMS
        cold = self.s.acquire(info, None)
        try:
            await self._before_first_byte(cold)
            vectors = [sim_embedding(t, info.name, dims) for t in texts]
            load_ns = max(int(self.s.behaviour.load_ms * 1e6), 1_000_000) if cold else 100_000
            obj = {
                "model": model,
                "embeddings": vectors,
                "total_duration": max(time.perf_counter_ns() - t0, load_ns + 1),
                "load_duration": load_ns,
                "prompt_eval_count": sum(_words(t) for t in texts),
            }
            return await self._send_json(request, obj)
        finally:
            self.s.release(info, keep_alive)

    async def api_embeddings(self, request: web.Request, body: bytes) -> web.StreamResponse:
        data = _parse_body(body)
        model, info = self._resolve(data, "ollama")
        keep_alive = _parse_keep_alive(data.get("keep_alive"))
        prompt = data.get("prompt") or ""
        if not isinstance(prompt, str):
            raise _ApiError(400, "invalid prompt: expected a string")
        cold = self.s.acquire(info, None)
        try:
            await self._before_first_byte(cold)
            vector = sim_embedding(prompt, info.name) if prompt else []
            return await self._send_json(request, {"embedding": vector})
        finally:
            self.s.release(info, keep_alive)

    async def api_show(self, request: web.Request) -> web.StreamResponse:
        try:
            data = _parse_body(await request.read())
            model, info = self._resolve(data, "ollama")
        except _ApiError as exc:
            return _error_response("ollama", exc.status, exc.message)
        arch = info.family
        template = "{{ if .System }}<|system|>{{ .System }}<|end|>{{ end }}<|user|>{{ .Prompt }}<|end|><|assistant|>"
        parameters = 'stop                           "<|end|>"\ntemperature                    0.7'
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this one, replace the FROM line with:\n"
            f"# FROM {info.name}\n\n"
            f"FROM /sim/{self.s.name}/blobs/sha256-{info.digest}\n"
            f'TEMPLATE """{template}"""\n'
            'PARAMETER stop "<|end|>"\n'
            "PARAMETER temperature 0.7\n"
        )
        return _json({
            "license": "",
            "modelfile": modelfile,
            "parameters": parameters,
            "template": template,
            "details": info.details(),
            "model_info": {
                "general.architecture": arch,
                "general.file_type": 15,
                "general.parameter_count": info.parameter_count,
                "general.quantization_version": 2,
                f"{arch}.context_length": info.native_context,
                f"{arch}.embedding_length": EMBED_DIMS if info.embedding_only else 4096,
                f"{arch}.block_count": 24,
            },
            "capabilities": ["embedding"] if info.embedding_only else ["completion", "tools"],
            "modified_at": info.modified_at,
        })

    async def api_tags(self, request: web.Request) -> web.StreamResponse:
        return _json({"models": [
            {
                "name": i.name,
                "model": i.name,
                "modified_at": i.modified_at,
                "size": i.size,
                "digest": i.digest,
                "details": i.details(),
            }
            for i in self.s.models.values()
        ]})

    async def api_ps(self, request: web.Request) -> web.StreamResponse:
        self.s._expire()
        out = []
        for key, res in self.s.resident.items():
            i = self.s.models[key]
            out.append({
                "name": i.name,
                "model": i.name,
                "size": i.size,
                "digest": i.digest,
                "details": i.details(),
                "expires_at": _rfc3339_epoch(res.expires_at),
                "size_vram": i.size,
                "context_length": res.context_length,
            })
        return _json({"models": out})

    async def api_version(self, request: web.Request) -> web.StreamResponse:
        return _json({"version": self.s.version})

    async def root(self, request: web.Request) -> web.StreamResponse:
        if self.s.kind == "ollama":
            return web.Response(text="Ollama is running", content_type="text/plain", charset="utf-8")
        return web.Response(text=f"<!doctype html><title>llama.cpp (sim {self.s.name})</title>",
                            content_type="text/html", charset="utf-8")

    async def health(self, request: web.Request) -> web.StreamResponse:  # llama.cpp
        return _json({"status": "ok"})

    # ---- OpenAI-compatible API -------------------------------------------------------
    def _openai_common(self, data: dict[str, Any]) -> _Gen:
        model, info = self._resolve(data, "openai")
        limit = data.get("max_completion_tokens")
        if limit is None:
            limit = data.get("max_tokens")
        n, limited = self._num_tokens(limit, "max_tokens")
        keep_alive = _parse_keep_alive(data.get("keep_alive"))
        return _Gen(model, info, n, limited, 1, data.get("stream") is True, keep_alive)

    async def v1_chat(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return await self._v1_gen(request, body, chat=True)

    async def v1_completions(self, request: web.Request, body: bytes) -> web.StreamResponse:
        return await self._v1_gen(request, body, chat=False)

    async def _v1_gen(self, request: web.Request, body: bytes, chat: bool) -> web.StreamResponse:
        data = _parse_body(body)
        g = self._openai_common(data)
        if g.info.embedding_only:
            raise _ApiError(400, f'"{g.model}" does not support {"chat" if chat else "generate"}')
        if chat:
            messages = data.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise _ApiError(400, "messages must be a non-empty array of message objects")
            g.prompt_tokens = max(1, sum(_words(m.get("content")) for m in messages))
        else:
            prompt = data.get("prompt")
            if isinstance(prompt, list):
                prompt = " ".join(str(p) for p in prompt)
            if not isinstance(prompt, str):
                raise _ApiError(400, "prompt is required")
            g.prompt_tokens = max(1, _words(prompt))
        opts = data.get("stream_options")
        include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
        seq = self.s.next_id()
        cid = f"chatcmpl-{seq}" if chat else f"cmpl-{seq}"
        created = int(time.time())
        finish = "length" if g.limited else "stop"
        usage = {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.n,
                 "total_tokens": g.prompt_tokens + g.n}
        cold = self.s.acquire(g.info, None)
        try:
            await self._before_first_byte(cold)
            if not g.stream:
                if await self._crashes_before_answer(request, g.n):
                    return web.Response()
                await self._generate_time(g.n)
                text = sim_text(g.n)
                if chat:
                    choice = {"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": finish}
                else:
                    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
                return await self._send_json(request, {
                    "id": cid,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": g.model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [choice],
                    "usage": usage,
                })
            obj_name = "chat.completion.chunk" if chat else "text_completion"
            head = {"id": cid, "object": obj_name, "created": created, "model": g.model,
                    "system_fingerprint": "fp_ollama"}
            pre = "data: " + _dumps(head)[:-1] + ',"choices":[{"index":0,'
            if chat:
                toks = [(pre + '"delta":{"role":"assistant","content":' + t + '},"finish_reason":null}]}\n\n').encode()
                        for t in _TOKENS_JSON]
            else:
                toks = [(pre + '"text":' + t + ',"finish_reason":null}]}\n\n').encode() for t in _TOKENS_JSON]

            def token_chunk(i: int) -> bytes:
                return toks[i % _NTOK]

            def tail() -> list[bytes]:
                if chat:
                    last = {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                 "finish_reason": finish}]}
                else:
                    last = {**head, "choices": [{"text": "", "index": 0, "finish_reason": finish}]}
                out = [f"data: {_dumps(last)}\n\n".encode()]
                if include_usage:
                    out.append(f"data: {_dumps({**head, 'choices': [], 'usage': usage})}\n\n".encode())
                out.append(b"data: [DONE]\n\n")
                return out

            return await self._stream(request, _SSE_CT, g.n, token_chunk, tail)
        finally:
            self.s.release(g.info, g.keep_alive)

    async def v1_embeddings(self, request: web.Request, body: bytes) -> web.StreamResponse:
        data = _parse_body(body)
        model, info = self._resolve(data, "openai")
        inp = data.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
            texts = list(inp)
        elif isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
            texts = [" ".join(map(str, inp))]  # one token array
        elif isinstance(inp, list) and inp and all(isinstance(x, list) for x in inp):
            texts = [" ".join(map(str, x)) for x in inp]
        else:
            raise _ApiError(400, "invalid input: expected a string or an array of strings")
        fmt = data.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _ApiError(400, f"invalid encoding_format: {fmt!r}")
        dims = _int_or_none(data.get("dimensions"), "dimensions") or EMBED_DIMS
        keep_alive = _parse_keep_alive(data.get("keep_alive"))
        cold = self.s.acquire(info, None)
        try:
            await self._before_first_byte(cold)
            items = []
            for idx, t in enumerate(texts):
                vec: Any = sim_embedding(t, info.name, dims)
                if fmt == "base64":
                    vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                items.append({"object": "embedding", "embedding": vec, "index": idx})
            tokens = sum(max(1, _words(t)) for t in texts)
            return await self._send_json(request, {
                "object": "list",
                "data": items,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })
        finally:
            self.s.release(info, keep_alive)

    def _v1_model(self, i: _ModelInfo) -> dict[str, Any]:
        return {"id": i.name, "object": "model", "created": i.modified_epoch,
                "owned_by": "library" if self.s.kind == "ollama" else "llamacpp"}

    async def v1_models(self, request: web.Request) -> web.StreamResponse:
        return _json({"object": "list", "data": [self._v1_model(i) for i in self.s.models.values()]})

    async def v1_model(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        info = self.s.lookup(name)
        if info is None:
            return _error_response("openai", 404, f'model "{name}" not found, try pulling it first')
        return _json(self._v1_model(info))

    # ---- management -----------------------------------------------------------------------
    async def sim_get_behaviour(self, request: web.Request) -> web.StreamResponse:
        return _json(self.s.behaviour.as_dict())

    async def sim_set_behaviour(self, request: web.Request) -> web.StreamResponse:
        try:
            data = _parse_body(await request.read())
        except _ApiError as exc:
            return _error_response("ollama", exc.status, exc.message)
        beh = self.s.behaviour
        allowed = {f.name for f in fields(beh)} - {"hold"}
        floats = {"tokens_per_second", "first_token_ms", "load_ms", "watts"}
        updates: dict[str, Any] = {}
        for key, value in data.items():
            if key not in allowed:
                return _error_response("ollama", 400, f"unknown behaviour field {key!r}")
            if key in floats:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    return _error_response("ollama", 400, f"{key} must be a number")
                updates[key] = float(value)
            elif key == "retry_after":
                if value is not None and not isinstance(value, (str, int)):
                    return _error_response("ollama", 400, "retry_after must be a string or null")
                updates[key] = None if value is None else str(value)
            else:
                try:
                    updates[key] = _int_or_none(value, key)
                except _ApiError as exc:
                    return _error_response("ollama", 400, exc.message)
        for key, value in updates.items():
            setattr(beh, key, value)
        return _json(beh.as_dict())

    async def sim_stats(self, request: web.Request) -> web.StreamResponse:
        return _json({**self.s.stats.as_dict(), "name": self.s.name, "kind": self.s.kind,
                      "models": [i.name for i in self.s.models.values()],
                      "loaded": self.s.loaded_models(), "watts": self.s.behaviour.watts})

    async def sim_stats_reset(self, request: web.Request) -> web.StreamResponse:
        self.s.stats.reset()
        return _json(self.s.stats.as_dict())


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=_dumps(obj), content_type="application/json", charset="utf-8")


# --------------------------------------------------------------------------- app factory


def create_sim_app(name: str, models: list[str], *, tokens_per_second: float = 50.0, watts: float = 10.0,
                   loaded: list[str] | None = None, kind: str = "ollama", version: str = "0.6.2",
                   default_tokens: int = 32, openai_endpoints: bool = True) -> web.Application:
    """Build the aiohttp app of one simulated backend.

    kind="ollama" serves Ollama's /api/* and its OpenAI-compatible /v1/*; kind="openai" serves only
    /v1/*, GET / and GET /health (like llama.cpp's server). openai_endpoints=False drops /v1/* from an
    Ollama sim, like Ollama releases before its OpenAI compatibility layer. app[SIM_BEHAVIOUR] / app[SIM_STATS] hold
    the knobs and counters; /_sim/behaviour and /_sim/stats expose them over HTTP.
    """
    state = SimState(name, list(models), tokens_per_second=tokens_per_second, watts=watts, loaded=loaded,
                     kind=kind, version=version, default_tokens=default_tokens)
    h = _Handlers(state)

    @web.middleware
    async def health_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        status = state.behaviour.health_status
        if status is not None and request.method in ("GET", "HEAD") and not request.path.startswith("/_sim/"):
            api = "openai" if request.path.startswith("/v1/") else "ollama"
            return _error_response(api, status, _failure_message(status))
        return await handler(request)

    app = web.Application(middlewares=[health_middleware], client_max_size=64 * 1024 * 1024)
    app[SIM_STATE] = state
    app[SIM_BEHAVIOUR] = state.behaviour
    app[SIM_STATS] = state.stats

    async def add_backend_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["X-Sim-Backend"] = name

    app.on_response_prepare.append(add_backend_header)

    async def on_shutdown(app: web.Application) -> None:
        state.closing.set()

    app.on_shutdown.append(on_shutdown)

    r = app.router
    r.add_get("/", h.root)
    if kind == "ollama":
        r.add_post("/api/chat", h.inference("ollama", h.api_chat))
        r.add_post("/api/generate", h.inference("ollama", h.api_generate))
        r.add_post("/api/embed", h.inference("ollama", h.api_embed))
        r.add_post("/api/embeddings", h.inference("ollama", h.api_embeddings))
        r.add_post("/api/show", h.api_show)
        r.add_get("/api/tags", h.api_tags)
        r.add_get("/api/ps", h.api_ps)
        r.add_get("/api/version", h.api_version)
    else:
        r.add_get("/health", h.health)
    if openai_endpoints or kind == "openai":
        r.add_post("/v1/chat/completions", h.inference("openai", h.v1_chat))
        r.add_post("/v1/completions", h.inference("openai", h.v1_completions))
        r.add_post("/v1/embeddings", h.inference("openai", h.v1_embeddings))
        r.add_get("/v1/models", h.v1_models)
        r.add_get("/v1/models/{model:.+}", h.v1_model)
    r.add_get("/_sim/behaviour", h.sim_get_behaviour)
    r.add_post("/_sim/behaviour", h.sim_set_behaviour)
    r.add_get("/_sim/stats", h.sim_stats)
    r.add_post("/_sim/stats/reset", h.sim_stats_reset)
    return app


async def serve_sim(host: str, port: int, name: str, models: list[str], tokens_per_second: float,
                    watts: float, **kw: Any) -> None:
    """Serve one simulated backend on host:port until cancelled (port 0 picks a free port)."""
    app = create_sim_app(name, models, tokens_per_second=tokens_per_second, watts=watts, **kw)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = port
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                bound = addr[1]
                break
        shown = f"[{host}]" if ":" in host else host
        names = ",".join(i.name for i in app[SIM_STATE].models.values())
        print(f"sim {name} listening on http://{shown}:{bound} models={names}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
