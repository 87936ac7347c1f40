"""Answer and stream translation between OpenAI-compatible and Ollama shapes (pure, plus small stream state)."""

from __future__ import annotations

import base64
import json
import struct
import time
from typing import Any, Callable

from ._common import (
    OLLAMA_TARGETS,
    OPENAI_TARGETS,
    dumps,
    error_message,
    lenient_arguments,
    openai_error,
    rfc3339,
    target,
    tool_calls_to_openai,
)

__all__ = [
    "openai_to_ollama_response",
    "ollama_to_openai_response",
    "OpenAIStreamToNdjson",
    "NdjsonToOpenAIStream",
]

# Durations (all nanoseconds) in Ollama answers made from OpenAI ones:
#   total_duration        measured by the caller (non-stream: total_ns) or by the converter's clock
#                         (stream: clock_ns() at [DONE] - started_ns).
#   prompt_eval_duration  llama.cpp `timings.prompt_ms` when present (measured upstream); else, streaming:
#                         time to the first delta (an estimate: includes queueing and network); non-stream: 0.
#   eval_duration         llama.cpp `timings.predicted_ms` when present; else, streaming: first delta to
#                         [DONE] (an estimate); non-stream: 0.
#   load_duration         always 0 (an OpenAI backend does not report it).
# Counts: usage.prompt_tokens / completion_tokens, else llama.cpp timings.prompt_n / predicted_n, else
# (streaming) the number of deltas received for eval_count (an estimate) and 0 for prompt_eval_count.


def _done_reason(finish_reason: Any) -> str:
    return "length" if finish_reason == "length" else "stop"  # tool_calls, content_filter, None -> stop


def _finish_reason(done_reason: Any, has_tools: bool) -> str:
    if done_reason == "length":
        return "length"
    return "tool_calls" if has_tools else "stop"


def _count(*values: Any) -> int:
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            return int(v)
    return 0


def _ms_to_ns(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return int(value * 1_000_000)
    return None


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):  # encoding_format=base64: little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
    return list(value or [])


def _ollama_tool_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in calls or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            out.append({"function": {"name": fn.get("name") or "", "arguments": lenient_arguments(fn.get("arguments"))}})
    return out


def _first_choice(body: dict[str, Any]) -> dict[str, Any]:
    for choice in body.get("choices") or []:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return {}


def openai_to_ollama_response(api_path: str, model: str, body: dict, *, started_ns: int, total_ns: int) -> dict:
    """A complete OpenAI answer -> the Ollama answer for `api_path`.

    api_path is the Ollama client's path (/api/chat, /api/generate, /api/embed, /api/embeddings); an upstream
    /v1/* path is accepted too (chat -> /api/chat, completions -> /api/generate, embeddings -> /api/embed).
    The upstream body may be a chat.completion or a text_completion for either of chat/generate. An OpenAI
    error body becomes Ollama's {"error": "..."}. started_ns is accepted for symmetry with the stream converter.
    """
    shape = target(OLLAMA_TARGETS, api_path, "openai_to_ollama_response")
    if not isinstance(body, dict):
        return {"error": "upstream answer is not a JSON object"}
    if body.get("error") is not None and not body.get("choices") and not body.get("data"):
        return {"error": error_message(body["error"])}
    if shape in ("embed", "embeddings"):
        items = [d for d in body.get("data") or [] if isinstance(d, dict)]
        items.sort(key=lambda d: d.get("index", 0))
        vectors = [_vector(d.get("embedding")) for d in items]
        if shape == "embeddings":
            return {"embedding": vectors[0] if vectors else []}
        usage = body.get("usage") or {}
        return {"model": model, "embeddings": vectors, "total_duration": int(total_ns), "load_duration": 0,
                "prompt_eval_count": _count(usage.get("prompt_tokens"))}

    choice = _first_choice(body)
    message = choice.get("message")
    thinking = None
    calls: list[dict[str, Any]] = []
    if isinstance(message, dict):
        content = message.get("content") or ""
        thinking = message.get("reasoning_content") or message.get("reasoning")
        calls = _ollama_tool_calls(message.get("tool_calls"))
    else:
        content = choice.get("text") or ""
    out: dict[str, Any] = {"model": model, "created_at": rfc3339()}
    if shape == "chat":
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            msg["thinking"] = thinking
        if calls:
            msg["tool_calls"] = calls
        out["message"] = msg
    else:
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
    usage = body.get("usage") or {}
    timings = body.get("timings") or {}
    out.update({
        "done": True,
        "done_reason": _done_reason(choice.get("finish_reason")),
        "total_duration": int(total_ns),
        "load_duration": 0,
        "prompt_eval_count": _count(usage.get("prompt_tokens"), timings.get("prompt_n")),
        "prompt_eval_duration": _ms_to_ns(timings.get("prompt_ms")) or 0,
        "eval_count": _count(usage.get("completion_tokens"), timings.get("predicted_n")),
        "eval_duration": _ms_to_ns(timings.get("predicted_ms")) or 0,
    })
    return out


def ollama_to_openai_response(api_path: str, model: str, body: dict, *, created: int, request_id: str) -> dict:
    """A complete Ollama answer -> the OpenAI answer for `api_path`.

    api_path is either side's path: /api/chat or /v1/chat/completions -> chat.completion, /api/generate or
    /v1/completions -> text_completion, /api/embed(dings) or /v1/embeddings -> an embeddings list with usage.
    An Ollama error body becomes OpenAI's {"error": {...}}.
    """
    shape = target(OPENAI_TARGETS, api_path, "ollama_to_openai_response")
    if not isinstance(body, dict):
        return openai_error("upstream answer is not a JSON object")
    if body.get("error") is not None:
        return openai_error(error_message(body["error"]))
    prompt_n = _count(body.get("prompt_eval_count"))
    if shape == "embedding":
        if "embeddings" in body:
            vectors = body.get("embeddings") or []
        else:
            vectors = [body.get("embedding") or []]
        return {
            "object": "list",
            "data": [{"object": "embedding", "embedding": list(v), "index": i} for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": prompt_n, "total_tokens": prompt_n},
        }
    message = body.get("message")
    if isinstance(message, dict):
        content = message.get("content") or ""
        thinking = message.get("thinking")
        calls = message.get("tool_calls") or []
    else:
        content = body.get("response") or ""
        thinking = body.get("thinking")
        calls = []
    eval_n = _count(body.get("eval_count"))
    usage = {"prompt_tokens": prompt_n, "completion_tokens": eval_n, "total_tokens": prompt_n + eval_n}
    finish = _finish_reason(body.get("done_reason"), bool(calls) and shape == "chat")
    if shape == "chat":
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            msg["reasoning_content"] = thinking
        if calls:
            msg["tool_calls"] = tool_calls_to_openai(calls, request_id)
            if not content:
                msg["content"] = None
        return {"id": request_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": msg, "finish_reason": finish, "logprobs": None}],
                "usage": usage}
    return {"id": request_id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": content, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage}


_DECODE = json.JSONDecoder().decode


class _Lines:
    """Splits a byte stream into lines (\\n or \\r\\n) without rescanning: any line length, any chunking."""

    __slots__ = ("buf", "scan")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.scan = 0

    def push(self, chunk: bytes) -> list[bytearray]:
        buf = self.buf
        buf += chunk
        lines = []
        pos = 0
        scan = self.scan
        while True:
            nl = buf.find(b"\n", scan)
            if nl < 0:
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            lines.append(buf[pos:end])
            pos = scan = nl + 1
        if pos:
            del buf[:pos]
        self.scan = len(buf)
        return lines

    def rest(self) -> bytes | None:
        """What is left after the last newline (a final line without one), or None."""
        if not self.buf:
            return None
        tail = bytes(self.buf).rstrip(b"\r")
        self.buf.clear()
        self.scan = 0
        return tail


class OpenAIStreamToNdjson:
    """Converts an upstream OpenAI SSE byte stream (chat or completions) into Ollama NDJSON lines.

    api_path is the Ollama client's path (/api/chat or /api/generate; /v1/chat/completions and /v1/completions
    are accepted as their counterparts). Content arrives as it comes; tool calls are assembled and sent as one
    line when the choice finishes (Ollama sends complete tool calls); [DONE] yields the final `done` line.
    An error event (OpenAI's `data: {"error": ...}`, `event: error`, or llama.cpp's `error:` field) or an end
    without [DONE] yields an {"error": "..."} line instead. See the module notes for the durations.
    """

    def __init__(self, api_path: str, model: str, *, started_ns: int,
                 clock_ns: Callable[[], int] = time.monotonic_ns):
        shape = target(OLLAMA_TARGETS, api_path, "OpenAIStreamToNdjson")
        if shape not in ("chat", "generate"):
            raise ValueError(f"OpenAIStreamToNdjson: {api_path} does not stream")
        self._chat = shape == "chat"
        self._model = model
        self._pre = '{"model":' + dumps(model) + ',"created_at":"'
        if self._chat:
            self._mid = '","message":{"role":"assistant","content":'
            self._end = '},"done":false}\n'
        else:
            self._mid = '","response":'
            self._end = ',"done":false}\n'
        self._started = started_ns
        self._clock = clock_ns
        self._lines = _Lines()
        self._data: list[str] = []
        self._event = ""
        self._tools: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] = {}
        self._timings: dict[str, Any] = {}
        self._finish: Any = None
        self._deltas = 0
        self._first_ns: int | None = None
        self._closed = False
        self.error: str | None = None

    # ---- public
    def feed(self, chunk: bytes) -> bytes:
        if self._closed or not chunk:
            return b""
        out: list[str] = []
        lines = self._lines.push(chunk)
        count = len(lines)
        index = 0
        while index < count and not self._closed:
            line = lines[index]
            # Fast path for the usual event, a single `data: {...}` line and its blank line.
            if (index + 1 < count and not lines[index + 1] and not self._data and not self._event
                    and line.startswith(b"data: {")):
                try:
                    obj = _DECODE(line[6:].decode("utf-8", "replace"))
                except ValueError:
                    self._fail("upstream sent an event that is not JSON", out)
                    break
                if isinstance(obj, dict):
                    if obj.get("error") is not None:
                        self._fail(error_message(obj["error"]), out)
                        break
                    self._chunk(obj, out)
                index += 2
                continue
            self._line(line, out)
            index += 1
        return "".join(out).encode()

    def finish(self) -> bytes:
        if self._closed:
            return b""
        out: list[str] = []
        tail = self._lines.rest()
        if tail:
            self._line(tail, out)
        if not self._closed and (self._data or self._event):
            self._dispatch(out)  # an event the upstream did not end with a blank line
        if not self._closed:
            self._fail("upstream stream ended before [DONE]", out)
        return "".join(out).encode()

    # ---- SSE parsing
    def _line(self, line: bytes | bytearray, out: list[str]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == 58:  # ":" comment (keep-alive ping)
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace").strip()
        elif name == b"error":  # llama.cpp writes `error: {...}` for errors inside a stream
            self._event = "error"
            self._data.append(value.decode("utf-8", "replace"))
        # id:, retry: and unknown fields are ignored

    def _dispatch(self, out: list[str]) -> None:
        data_lines, event = self._data, self._event
        self._data, self._event = [], ""
        if not data_lines:
            if event == "error":
                self._fail("upstream sent an error event", out)
            return
        data = data_lines[0] if len(data_lines) == 1 else "\n".join(data_lines)
        if event != "error" and data.strip() == "[DONE]":
            self._done(out)
            return
        try:
            obj = json.loads(data)
        except ValueError:
            if event == "error":
                self._fail(data.strip() or "upstream sent an error event", out)
            else:
                self._fail("upstream sent an event that is not JSON", out)
            return
        if event == "error" or (isinstance(obj, dict) and obj.get("error") is not None):
            err = obj.get("error", obj) if isinstance(obj, dict) else obj
            self._fail(error_message(err), out)
            return
        if isinstance(obj, dict):
            self._chunk(obj, out)

    # ---- chunk conversion
    def _tick(self) -> None:
        self._deltas += 1
        if self._first_ns is None:
            self._first_ns = self._clock()

    def _chunk(self, obj: dict[str, Any], out: list[str]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        timings = obj.get("timings")
        if isinstance(timings, dict):
            self._timings = timings
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content")
                thinking = delta.get("reasoning_content") or delta.get("reasoning")
                calls = delta.get("tool_calls")
            else:
                text = choice.get("text")
                thinking = calls = None
            if text:
                self._tick()
                out.append(self._pre + rfc3339() + self._mid + dumps(text) + self._end)
            if thinking:
                self._tick()
                out.append(self._plain({"thinking": thinking}))
            if calls:
                self._tick()
                self._collect(calls)
            reason = choice.get("finish_reason")
            if reason:
                self._finish = reason
                self._flush_tools(out)

    def _plain(self, extra: dict[str, Any]) -> str:
        obj: dict[str, Any] = {"model": self._model, "created_at": rfc3339()}
        if self._chat:
            obj["message"] = {"role": "assistant", "content": "", **extra}
        else:
            obj["response"] = ""
            obj.update(extra)
        obj["done"] = False
        return dumps(obj) + "\n"

    def _collect(self, calls: Any) -> None:
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            idx = call.get("index")
            if not isinstance(idx, int):
                idx = len(self._tools)
            slot = self._tools.setdefault(idx, {"name": "", "args": []})
            fn = call.get("function") or {}
            if fn.get("name"):
                slot["name"] = fn["name"]
            args = fn.get("arguments")
            if isinstance(args, str) and args:
                slot["args"].append(args)
            elif isinstance(args, dict):
                slot["args"].append(dumps(args))

    def _flush_tools(self, out: list[str]) -> None:
        if not self._tools:
            return
        calls = [{"function": {"name": slot["name"], "arguments": lenient_arguments("".join(slot["args"]))}}
                 for _, slot in sorted(self._tools.items())]
        self._tools = {}
        if self._chat:  # /api/generate has no tool calls
            out.append(self._plain({"tool_calls": calls}))

    def _done(self, out: list[str]) -> None:
        self._flush_tools(out)
        now = self._clock()
        usage, timings = self._usage, self._timings
        first = self._first_ns
        total = max(0, now - self._started)
        prompt_ns = _ms_to_ns(timings.get("prompt_ms"))
        if prompt_ns is None:
            prompt_ns = max(0, first - self._started) if first is not None else total
        eval_ns = _ms_to_ns(timings.get("predicted_ms"))
        if eval_ns is None:
            eval_ns = max(0, now - first) if first is not None else 0
        obj: dict[str, Any] = {"model": self._model, "created_at": rfc3339()}
        if self._chat:
            obj["message"] = {"role": "assistant", "content": ""}
        else:
            obj["response"] = ""
        obj.update({
            "done": True,
            "done_reason": _done_reason(self._finish),
            "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": _count(usage.get("prompt_tokens"), timings.get("prompt_n")),
            "prompt_eval_duration": prompt_ns,
            "eval_count": _count(usage.get("completion_tokens"), timings.get("predicted_n"), self._deltas),
            "eval_duration": eval_ns,
        })
        out.append(dumps(obj) + "\n")
        self._closed = True

    def _fail(self, message: str, out: list[str]) -> None:
        self.error = message
        out.append(dumps({"error": message}) + "\n")
        self._closed = True


class NdjsonToOpenAIStream:
    """Converts an upstream Ollama NDJSON byte stream into OpenAI SSE events.

    api_path is either side's path (/v1/chat/completions or /api/chat -> chat.completion.chunk events,
    /v1/completions or /api/generate -> text_completion events). The final `done` line becomes a chunk with
    finish_reason, then (include_usage) a usage chunk with no choices, then `data: [DONE]`. An {"error"} line,
    a line that is not JSON, or an end without a `done` line becomes `data: {"error": {...}}` then [DONE].
    """

    def __init__(self, api_path: str, model: str, *, request_id: str, created: int, include_usage: bool):
        shape = target(OPENAI_TARGETS, api_path, "NdjsonToOpenAIStream")
        if shape not in ("chat", "completion"):
            raise ValueError(f"NdjsonToOpenAIStream: {api_path} does not stream")
        self._chat = shape == "chat"
        self._request_id = request_id
        self._head = {"id": request_id, "object": "chat.completion.chunk" if self._chat else "text_completion",
                      "created": created, "model": model}
        pre = "data: " + dumps(self._head)[:-1] + ',"choices":[{"index":0,'
        if self._chat:
            self._pre = pre + '"delta":{"content":'
            self._end = '},"finish_reason":null}]}\n\n'
        else:
            self._pre = pre + '"text":'
            self._end = ',"logprobs":null,"finish_reason":null}]}\n\n'
        self._include_usage = include_usage
        self._lines = _Lines()
        self._role_sent = False
        self._tool_count = 0
        self._closed = False
        self.error: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self._closed or not chunk:
            return b""
        out: list[str] = []
        for line in self._lines.push(chunk):
            self._line(line, out)
            if self._closed:
                break
        return "".join(out).encode()

    def finish(self) -> bytes:
        if self._closed:
            return b""
        out: list[str] = []
        tail = self._lines.rest()
        if tail:
            self._line(tail, out)
        if not self._closed:
            self._fail("upstream stream ended before its final done line", out)
        return "".join(out).encode()

    # ---- conversion
    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        return "data: " + dumps({**self._head, "choices": choices, **extra}) + "\n\n"

    def _line(self, line: bytes | bytearray, out: list[str]) -> None:
        if not line.strip():
            return
        try:
            obj = json.loads(line)
        except ValueError:
            self._fail("upstream sent a line that is not JSON", out)
            return
        if not isinstance(obj, dict):
            self._fail("upstream sent a line that is not a JSON object", out)
            return
        if obj.get("error") is not None:
            self._fail(error_message(obj["error"]), out)
            return
        message = obj.get("message")
        if isinstance(message, dict):
            text = message.get("content") or ""
            thinking = message.get("thinking")
            calls = message.get("tool_calls")
        else:
            text = obj.get("response") or ""
            thinking = obj.get("thinking")
            calls = None
        if self._chat:
            if not self._role_sent or thinking or calls:
                delta: dict[str, Any] = {}
                if not self._role_sent:
                    delta["role"] = "assistant"
                    self._role_sent = True
                delta["content"] = text
                if thinking:
                    delta["reasoning_content"] = thinking
                if calls:
                    converted = tool_calls_to_openai(calls, self._request_id, self._tool_count)
                    for k, call in enumerate(converted, self._tool_count):
                        call["index"] = k
                    self._tool_count += len(converted)
                    delta["tool_calls"] = converted
                out.append(self._event([{"index": 0, "delta": delta, "finish_reason": None}]))
            elif text:
                out.append(self._pre + dumps(text) + self._end)
        elif text:
            out.append(self._pre + dumps(text) + self._end)
        if obj.get("done"):
            reason = _finish_reason(obj.get("done_reason"), self._tool_count > 0)
            if self._chat:
                out.append(self._event([{"index": 0, "delta": {}, "finish_reason": reason}]))
            else:
                out.append(self._event([{"text": "", "index": 0, "logprobs": None, "finish_reason": reason}]))
            if self._include_usage:
                p = _count(obj.get("prompt_eval_count"))
                e = _count(obj.get("eval_count"))
                out.append(self._event([], usage={"prompt_tokens": p, "completion_tokens": e, "total_tokens": p + e}))
            out.append("data: [DONE]\n\n")
            self._closed = True

    def _fail(self, message: str, out: list[str]) -> None:
        self.error = message
        out.append("data: " + dumps(openai_error(message)) + "\n\n")
        out.append("data: [DONE]\n\n")
        self._closed = True
