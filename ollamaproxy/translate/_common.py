"""Small helpers shared by the request, answer and stream translators."""

from __future__ import annotations

import json
import time
from typing import Any

# Ollama client path -> the answer shape it expects; OpenAI paths name the shape they produce.
OLLAMA_TARGETS = {
    "/api/chat": "chat",
    "/api/generate": "generate",
    "/api/embed": "embed",
    "/api/embeddings": "embeddings",
    "/v1/chat/completions": "chat",
    "/v1/completions": "generate",
    "/v1/embeddings": "embed",
}
OPENAI_TARGETS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/api/chat": "chat",
    "/api/generate": "completion",
    "/api/embed": "embedding",
    "/api/embeddings": "embedding",
}


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is (one shared encoder: json.dumps with options builds one per call)."""
    return _ENCODER.encode(obj)


def norm_path(path: str) -> str:
    """`/API/Chat/?x=1` -> `/api/chat`."""
    return (path.split("?", 1)[0].rstrip("/") or "/").lower()


def target(table: dict[str, str], path: str, what: str) -> str:
    try:
        return table[norm_path(path)]
    except KeyError:
        raise ValueError(f"{what}: unsupported path {path!r}") from None


_TS_CACHE: tuple[int, str] = (-1, "")


def rfc3339(ns: int | None = None) -> str:
    """RFC3339 UTC timestamp with nanoseconds (Ollama's `created_at`), cheap per call."""
    global _TS_CACHE
    if ns is None:
        ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    cached = _TS_CACHE
    if cached[0] != sec:
        cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        _TS_CACHE = cached
    return f"{cached[1]}.{frac:09d}Z"


def error_message(err: Any) -> str:
    """The message of an OpenAI (`{"message": ...}`) or Ollama (string) error value."""
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str) and msg:
            return msg
        return dumps(err)
    if isinstance(err, str) and err:
        return err
    return "upstream error" if err in (None, "", True) else str(err)


def openai_error(message: str, etype: str = "api_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "param": None, "code": None}}


def call_id(request_id: str, i: int) -> str:
    """A tool-call id for Ollama tool calls (which carry none): `call_<request id tail>_<i>`."""
    tail = request_id.rsplit("-", 1)[-1] or "x"
    return f"call_{tail}_{i}"


def arguments_to_object(raw: Any) -> dict[str, Any]:
    """OpenAI tool-call arguments (a JSON string) -> Ollama's object; raises ValueError when not a JSON object."""
    if isinstance(raw, dict):
        return raw
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return {}
    if not isinstance(raw, str):
        raise ValueError(f"tool call arguments must be a JSON string, got {type(raw).__name__}")
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("tool call arguments must be a JSON object")
    return value


def lenient_arguments(raw: Any) -> dict[str, Any]:
    """Like arguments_to_object for upstream answers: unparsable arguments are kept as {"_raw_arguments": raw}."""
    try:
        return arguments_to_object(raw)
    except ValueError:
        return {"_raw_arguments": raw if isinstance(raw, str) else dumps(raw)}


def arguments_to_string(args: Any) -> str:
    """Ollama tool-call arguments (an object) -> OpenAI's JSON string."""
    if isinstance(args, str):
        return args
    return dumps({} if args is None else args)


def tool_calls_to_openai(calls: list[Any], request_id: str, start: int = 0) -> list[dict[str, Any]]:
    """Ollama `message.tool_calls` -> OpenAI `tool_calls` (ids made up where Ollama has none)."""
    out = []
    for i, call in enumerate(calls, start):
        fn = call.get("function") or {} if isinstance(call, dict) else {}
        out.append({
            "id": (call.get("id") if isinstance(call, dict) else None) or call_id(request_id, i),
            "type": "function",
            "function": {"name": fn.get("name") or "", "arguments": arguments_to_string(fn.get("arguments"))},
        })
    return out
