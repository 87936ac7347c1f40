"""Request translation between Ollama's /api/* and the OpenAI-compatible /v1/* (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._common import arguments_to_object, arguments_to_string, dumps, norm_path

__all__ = ["Translated", "TranslationError", "ollama_to_openai", "openai_to_ollama", "image_data_url"]


@dataclass(frozen=True)
class Translated:
    """A request ready for the other kind of backend."""

    path: str  # backend path to call, e.g. "/v1/chat/completions" or "/api/chat"
    body: bytes  # JSON body for the backend
    stream: bool  # whether the client asked for a stream
    unmapped: tuple[str, ...]  # names that could not be mapped (the caller reports them in a header)
    include_usage: bool = False  # OpenAI stream_options.include_usage requested (OpenAI -> Ollama direction)


class TranslationError(ValueError):
    """The request cannot be translated; the message says why."""


# Sampling options with the same name and meaning on both sides. top_k is no OpenAI standard, but
# llama.cpp and vLLM accept it, so it travels without being reported.
_SAME = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")

# Base64 prefixes of common image formats -> MIME type for data URLs (Ollama sends bare base64).
_IMAGE_MAGIC = (
    ("iVBORw0KGgo", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lGOD", "image/gif"),
    ("UklGR", "image/webp"),
    ("Qk", "image/bmp"),
)


def image_data_url(image: Any) -> str:
    """An Ollama image (bare base64) -> a data URL; the MIME type is sniffed, JPEG when unknown."""
    if not isinstance(image, str) or not image:
        raise TranslationError("images must be base64-encoded strings")
    if image.startswith("data:"):
        return image
    mime = next((m for prefix, m in _IMAGE_MAGIC if image.startswith(prefix)), "image/jpeg")
    return f"data:{mime};base64,{image}"


def _data_url_to_base64(url: Any) -> str:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise TranslationError("only data: URLs can be sent as images to an Ollama backend (remote image URLs "
                               "are not fetched)")
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise TranslationError("image data URLs must be base64-encoded (data:<mime>;base64,...)")
    return data


def _result(path: str, body: dict[str, Any], stream: bool, unmapped: list[str],
            include_usage: bool = False) -> Translated:
    return Translated(path, dumps(body).encode(), stream, tuple(sorted(set(unmapped))), include_usage)


def _need_dict(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise TranslationError(f"request body must be a JSON object, got {type(payload).__name__}")
    return payload


# ============================================================== Ollama -> OpenAI


def _stop_list(value: Any) -> list[Any]:
    return [value] if isinstance(value, str) else list(value)


def _ollama_options(payload: dict[str, Any], out: dict[str, Any], unmapped: list[str], *,
                    sampling: bool) -> None:
    options = payload.get("options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise TranslationError("options must be an object")
    for key, value in options.items():
        if value is None:
            continue
        if not sampling:
            unmapped.append(key)
        elif key in _SAME:
            out[key] = value
        elif key == "stop":
            out["stop"] = _stop_list(value)
        elif key == "num_predict":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TranslationError(f"invalid num_predict: {value!r}")
            if value >= 0:  # -1 (no limit) and -2 (fill the context) are OpenAI's default: no cap
                out["max_tokens"] = int(value)
        else:
            unmapped.append(key)


def _ollama_format(fmt: Any, out: dict[str, Any]) -> None:
    if fmt is None or fmt == "":
        return
    if fmt == "json":
        out["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "schema", "schema": fmt}}
    else:
        raise TranslationError(f'format must be "json" or a JSON schema object, got {fmt!r}')


def _ollama_tools(tools: Any, out: dict[str, Any], unmapped: list[str]) -> None:
    if not tools:
        return
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list")
    kept = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type", "function") == "function" and isinstance(tool.get("function"), dict):
            kept.append({"type": "function", "function": tool["function"]})
        else:
            unmapped.append("tools")
    if kept:
        out["tools"] = kept


def _user_content(text: str, images: Any) -> Any:
    if not images:
        return text
    if not isinstance(images, list):
        raise TranslationError("images must be a list of base64 strings")
    parts: list[dict[str, Any]] = []
    if text:
        parts.append({"type": "text", "text": text})
    parts.extend({"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in images)
    return parts


_OLLAMA_MESSAGE_KEYS = {"role", "content", "images", "tool_calls", "tool_name", "tool_call_id"}


def _ollama_messages(messages: Any, unmapped: list[str]) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise TranslationError("messages must be a list of message objects")
    out = []
    pending: list[tuple[str, str]] = []  # (id, name) of the last assistant tool calls not yet answered
    for i, m in enumerate(messages):
        role = m.get("role") or "user"
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TranslationError("message content must be a string")
        msg: dict[str, Any] = {"role": role, "content": _user_content(content, m.get("images"))}
        calls = m.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise TranslationError("tool_calls must be a list")
            converted = []
            pending = []
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict):
                    raise TranslationError("each tool call needs a function object")
                cid = call.get("id") or f"call_{i}_{j}"
                name = fn.get("name") or ""
                converted.append({"id": cid, "type": "function",
                                  "function": {"name": name, "arguments": arguments_to_string(fn.get("arguments"))}})
                pending.append((cid, name))
            msg["tool_calls"] = converted
        if role == "tool":
            cid = m.get("tool_call_id")
            if not cid:
                # Ollama names the tool, OpenAI needs the call id: answer the matching pending call
                name = m.get("tool_name")
                k = next((k for k, (_, n) in enumerate(pending) if n == name), 0 if pending else None)
                cid = pending.pop(k)[0] if k is not None else f"call_{i}"
            msg["tool_call_id"] = cid
        for key, value in m.items():
            if key not in _OLLAMA_MESSAGE_KEYS and value not in (None, "", []):
                unmapped.append(key)  # e.g. "thinking": OpenAI has no input field for it
        out.append(msg)
    return out


def _ollama_rest(payload: dict[str, Any], handled: set[str], unmapped: list[str]) -> None:
    for key, value in payload.items():
        if key not in handled and value is not None:
            unmapped.append(key)


def _openai_stream_fields(body: dict[str, Any], stream: bool) -> None:
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}


def ollama_to_openai(path: str, payload: dict) -> Translated:
    """Translate an Ollama /api/chat, /api/generate, /api/embed or /api/embeddings request to /v1/*.

    /api/generate goes to /v1/completions (prompt, suffix) unless it carries `system` or `images`:
    then to /v1/chat/completions with a system message and a user message (suffix is then unmapped).
    Empty chats/prompts (Ollama's "load/unload a model" requests) have no OpenAI equivalent.
    """
    payload = _need_dict(payload)
    p = norm_path(path)
    unmapped: list[str] = []
    model = payload.get("model") or payload.get("name")
    if not isinstance(model, str) or not model:
        raise TranslationError("model is required")
    body: dict[str, Any] = {"model": model}
    stream = payload.get("stream") is not False
    handled = {"model", "name", "stream", "options", "format", "keep_alive"}
    if payload.get("keep_alive") is not None:
        unmapped.append("keep_alive")  # no OpenAI equivalent (harmless)

    if p in ("/api/embed", "/api/embeddings"):
        if p == "/api/embed":
            inp = payload.get("input")
            if inp is None or inp == "" or inp == []:
                raise TranslationError("embed without input (load a model) has no OpenAI equivalent")
            if not (isinstance(inp, str) or (isinstance(inp, list) and all(isinstance(x, str) for x in inp))):
                raise TranslationError("input must be a string or a list of strings")
            body["input"] = inp
            handled |= {"input", "dimensions"}
            if payload.get("dimensions") is not None:
                body["dimensions"] = payload["dimensions"]
        else:
            prompt = payload.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                raise TranslationError("embeddings without a prompt (load a model) has no OpenAI equivalent")
            body["input"] = prompt
            handled.add("prompt")
        body["encoding_format"] = "float"
        _ollama_options(payload, body, unmapped, sampling=False)
        _ollama_rest(payload, handled | {"format"}, unmapped)
        if payload.get("format") not in (None, ""):
            unmapped.append("format")
        return _result("/v1/embeddings", body, False, unmapped)

    if p == "/api/chat":
        messages = payload.get("messages")
        if not messages:
            raise TranslationError("chat without messages (load/unload a model) has no OpenAI equivalent")
        body["messages"] = _ollama_messages(messages, unmapped)
        handled |= {"messages", "tools"}
        _ollama_tools(payload.get("tools"), body, unmapped)
        out_path = "/v1/chat/completions"
    elif p == "/api/generate":
        prompt = payload.get("prompt")
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, str):
            raise TranslationError("prompt must be a string")
        system = payload.get("system")
        images = payload.get("images")
        if not prompt and not images:
            raise TranslationError("generate without a prompt (load/unload a model) has no OpenAI equivalent")
        handled |= {"prompt", "system", "images", "suffix"}
        if system or images:
            messages = []
            if system:
                if not isinstance(system, str):
                    raise TranslationError("system must be a string")
                messages.append({"role": "system", "content": system})
            messages.append({"role": "user", "content": _user_content(prompt, images)})
            body["messages"] = messages
            if payload.get("suffix"):
                unmapped.append("suffix")
            out_path = "/v1/chat/completions"
        else:
            body["prompt"] = prompt
            if payload.get("suffix"):
                body["suffix"] = payload["suffix"]
            out_path = "/v1/completions"
    else:
        raise TranslationError(f"{path} has no OpenAI-compatible equivalent")

    _ollama_options(payload, body, unmapped, sampling=True)
    _ollama_format(payload.get("format"), body)
    _ollama_rest(payload, handled, unmapped)  # raw, context, template, think, ... -> unmapped
    _openai_stream_fields(body, stream)
    return _result(out_path, body, stream, unmapped)


# ============================================================== OpenAI -> Ollama


def _content_text_images(content: Any) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise TranslationError("message content must be a string or a list of content parts")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(part.get("text") or "")
        elif kind == "image_url":
            ref = part.get("image_url")
            images.append(_data_url_to_base64(ref.get("url") if isinstance(ref, dict) else ref))
        else:
            raise TranslationError(f"content part type {kind!r} cannot be sent to an Ollama backend")
    return "\n".join(texts), images


_OPENAI_MESSAGE_KEYS = {"role", "content", "tool_calls", "tool_call_id", "reasoning_content", "reasoning",
                        "refusal"}


def _openai_messages(messages: Any, unmapped: list[str]) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise TranslationError("messages must be a non-empty list of message objects")
    out = []
    names: dict[str, str] = {}  # tool call id -> function name, for Ollama's tool_name
    for m in messages:
        role = m.get("role") or "user"
        if role == "developer":
            role = "system"
        text, images = _content_text_images(m.get("content"))
        msg: dict[str, Any] = {"role": role, "content": text}
        if images:
            msg["images"] = images
        thinking = m.get("reasoning_content") or m.get("reasoning")
        if thinking:
            msg["thinking"] = thinking
        calls = m.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise TranslationError("tool_calls must be a list")
            converted = []
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or call.get("type", "function") != "function":
                    raise TranslationError("only function tool calls can be sent to an Ollama backend")
                try:
                    args = arguments_to_object(fn.get("arguments"))
                except ValueError as exc:
                    raise TranslationError(f"tool call {fn.get('name')!r}: {exc}") from None
                if call.get("id"):
                    names[call["id"]] = fn.get("name") or ""
                converted.append({"function": {"name": fn.get("name") or "", "arguments": args}})
            msg["tool_calls"] = converted
        if role == "tool" and m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
            if m["tool_call_id"] in names:
                msg["tool_name"] = names[m["tool_call_id"]]
        for key, value in m.items():
            if key not in _OPENAI_MESSAGE_KEYS and value not in (None, "", []):
                unmapped.append(key)  # e.g. "name"
        out.append(msg)
    return out


def _openai_format(rf: Any, body: dict[str, Any]) -> None:
    if rf is None:
        return
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        body["format"] = "json"
    elif kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise TranslationError("response_format json_schema needs json_schema.schema (an object)")
        body["format"] = schema
    else:
        raise TranslationError(f"unsupported response_format: {rf!r}")


# OpenAI fields that change nothing at these values
_DEFAULTS = {"n": 1, "best_of": 1, "logprobs": False, "echo": False, "parallel_tool_calls": True}


def openai_to_ollama(path: str, payload: dict) -> Translated:
    """Translate an OpenAI /v1/chat/completions, /v1/completions or /v1/embeddings request to /api/*."""
    payload = _need_dict(payload)
    p = norm_path(path)
    unmapped: list[str] = []
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("model is required")
    body: dict[str, Any] = {"model": model}
    handled = {"model", "stream", "stream_options", "keep_alive"}
    if payload.get("keep_alive") is not None:
        body["keep_alive"] = payload["keep_alive"]  # Ollama's own field, sent by some clients via extra_body

    if p == "/v1/embeddings":
        inp = payload.get("input")
        if not (isinstance(inp, str) or (isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp))):
            raise TranslationError("input must be a string or a non-empty list of strings (token arrays cannot "
                                   "be sent to an Ollama backend)")
        body["input"] = inp
        handled |= {"input", "dimensions", "encoding_format"}
        if payload.get("dimensions") is not None:
            body["dimensions"] = payload["dimensions"]
        if payload.get("encoding_format") not in (None, "float"):
            unmapped.append("encoding_format")  # the answer carries float lists
        _openai_rest(payload, handled, unmapped)
        return _result("/api/embed", body, False, unmapped)

    stream = payload.get("stream") is True
    so = payload.get("stream_options")
    include_usage = stream and isinstance(so, dict) and so.get("include_usage") is True
    options: dict[str, Any] = {}
    for key in _SAME:
        if payload.get(key) is not None:
            options[key] = payload[key]
    if payload.get("stop") is not None:
        options["stop"] = _stop_list(payload["stop"])
    limit = payload.get("max_completion_tokens")
    if limit is None:
        limit = payload.get("max_tokens")
    if limit is not None:
        options["num_predict"] = limit
    handled |= set(_SAME) | {"stop", "max_tokens", "max_completion_tokens", "response_format"}

    if p == "/v1/chat/completions":
        body["messages"] = _openai_messages(payload.get("messages"), unmapped)
        handled |= {"messages", "tools", "tool_choice"}
        tools = payload.get("tools")
        choice = payload.get("tool_choice")
        if tools and choice != "none":
            if not isinstance(tools, list):
                raise TranslationError("tools must be a list")
            kept = [t for t in tools if isinstance(t, dict) and t.get("type") == "function"
                    and isinstance(t.get("function"), dict)]
            if len(kept) != len(tools):
                unmapped.append("tools")
            if kept:
                body["tools"] = kept
        if choice not in (None, "auto", "none"):
            unmapped.append("tool_choice")  # "required" / a named function: Ollama always lets the model choose
        out_path = "/api/chat"
    elif p == "/v1/completions":
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise TranslationError("prompt must be a string (batched prompts and token arrays cannot be sent to "
                                   "an Ollama backend)")
        body["prompt"] = prompt
        handled |= {"prompt", "suffix"}
        if payload.get("suffix"):
            body["suffix"] = payload["suffix"]
        out_path = "/api/generate"
    else:
        raise TranslationError(f"{path} has no Ollama equivalent")

    _openai_format(payload.get("response_format"), body)
    if options:
        body["options"] = options
    body["stream"] = stream
    _openai_rest(payload, handled, unmapped)
    return _result(out_path, body, stream, unmapped, include_usage)


def _openai_rest(payload: dict[str, Any], handled: set[str], unmapped: list[str]) -> None:
    for key, value in payload.items():
        if key in handled or value is None:
            continue
        if key in _DEFAULTS and value == _DEFAULTS[key]:
            continue
        unmapped.append(key)  # n>1, logit_bias, logprobs, user, ...
