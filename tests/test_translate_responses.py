"""Answer translation and the stream converters: any chunking gives the same result, tools, errors, [DONE]."""

import base64
import json
import random
import re
import struct

import pytest
from ollama._types import ChatResponse, EmbedResponse, EmbeddingsResponse, GenerateResponse
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ollamaproxy.translate.responses import (
    NdjsonToOpenAIStream,
    OpenAIStreamToNdjson,
    ollama_to_openai_response,
    openai_to_ollama_response,
)

RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$"


class FakeClock:
    """Deterministic clock_ns: every call advances 1 ms."""

    def __init__(self, start: int = 1_000_000_000):
        self.now = start

    def __call__(self) -> int:
        self.now += 1_000_000
        return self.now


def sse(*objs, crlf: bool = False) -> bytes:
    nl = "\r\n" if crlf else "\n"
    out = []
    for obj in objs:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        out.append(f"data: {data}{nl}{nl}")
    return "".join(out).encode()


def chat_chunk(delta: dict, finish=None, **extra) -> dict:
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m:1b",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


# A stream as llama.cpp's server writes it: role chunk, content, a keep-alive comment, CRLF events,
# finish chunk with timings, usage chunk, [DONE].
RECORDED_CHAT = (
    sse(chat_chunk({"role": "assistant", "content": None}))
    + b": ping\n\n"
    + sse(chat_chunk({"content": "The "}), chat_chunk({"content": "sky é "}), crlf=True)
    + b"event: message\nid: 3\ndata: " + json.dumps(chat_chunk({"content": "is \"blue\"\n"})).encode() + b"\n\n"
    + sse(chat_chunk({}, "stop", timings={"prompt_n": 5, "prompt_ms": 12.5, "predicted_n": 3, "predicted_ms": 40.0}))
    + sse({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m:1b", "choices": [],
           "usage": {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}})
    + sse("[DONE]")
)


def parse_ndjson(data: bytes) -> list[dict]:
    lines = data.decode().split("\n")
    assert lines[-1] == ""  # always whole lines
    out = [json.loads(line) for line in lines[:-1]]
    for obj in out:
        obj.pop("created_at", None)
    return out


def run_to_ndjson(chunks, api_path="/api/chat", started_ns=1_000_000_000):
    conv = OpenAIStreamToNdjson(api_path, "m:1b", started_ns=started_ns, clock_ns=FakeClock(started_ns))
    out = b""
    for chunk in chunks:
        piece = conv.feed(chunk)
        assert piece == b"" or piece.endswith(b"\n")
        out += piece
    out += conv.finish()
    assert conv.finish() == b""  # idempotent
    return out, conv


def splits(data: bytes):
    for i in range(len(data) + 1):
        yield [data[:i], data[i:]]


def random_chunkings(data: bytes, n: int = 30, seed: int = 7):
    rng = random.Random(seed)
    for _ in range(n):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, min(40, len(data) - 1))))
        yield [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


# ------------------------------------------------------------------ OpenAI SSE -> Ollama NDJSON


def test_recorded_chat_stream_to_ndjson():
    out, conv = run_to_ndjson([RECORDED_CHAT])
    lines = parse_ndjson(out)
    assert conv.error is None
    assert [line["message"]["content"] for line in lines] == ["The ", "sky é ", 'is "blue"\n', ""]
    final = lines[-1]
    assert final == {"model": "m:1b", "message": {"role": "assistant", "content": ""}, "done": True,
                     "done_reason": "stop", "total_duration": final["total_duration"], "load_duration": 0,
                     "prompt_eval_count": 6, "prompt_eval_duration": 12_500_000, "eval_count": 3,
                     "eval_duration": 40_000_000}
    assert final["total_duration"] > 0
    for obj in json.loads("[" + ",".join(out.decode().splitlines()) + "]"):
        ChatResponse.model_validate(obj)
        assert re.match(RFC3339, obj["created_at"])


def test_result_is_independent_of_chunking_every_byte_position():
    reference, _ = run_to_ndjson([RECORDED_CHAT])
    expected = parse_ndjson(reference)
    for chunks in splits(RECORDED_CHAT):
        assert parse_ndjson(run_to_ndjson(chunks)[0]) == expected
    assert parse_ndjson(run_to_ndjson([bytes([b]) for b in RECORDED_CHAT])[0]) == expected
    for chunks in random_chunkings(RECORDED_CHAT):
        assert parse_ndjson(run_to_ndjson(chunks)[0]) == expected


def test_durations_estimated_from_clock_without_timings():
    stream = sse(chat_chunk({"role": "assistant", "content": "a"}), chat_chunk({"content": "b"}),
                 chat_chunk({"content": "c"}, "length"), "[DONE]")
    clock = FakeClock(0)
    conv = OpenAIStreamToNdjson("/api/chat", "m", started_ns=0, clock_ns=clock)
    lines = parse_ndjson(conv.feed(stream) + conv.finish())
    final = lines[-1]
    # first delta at 1 ms (prompt phase), [DONE] at 2 ms: generation took 1 ms
    assert final["prompt_eval_duration"] == 1_000_000 and final["eval_duration"] == 1_000_000
    assert final["total_duration"] == 2_000_000
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 3 and final["prompt_eval_count"] == 0  # counted deltas; no usage seen


def test_generate_stream_from_completions_chunks():
    text_chunk = lambda t, fr=None: {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                                     "choices": [{"text": t, "index": 0, "logprobs": None, "finish_reason": fr}]}
    stream = sse(text_chunk("Hel"), text_chunk("lo"), text_chunk("", "stop"),
                 {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [],
                  "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}}, "[DONE]")
    out, conv = run_to_ndjson([stream], api_path="/api/generate")
    lines = parse_ndjson(out)
    assert [line["response"] for line in lines] == ["Hel", "lo", ""]
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 2 and lines[-1]["prompt_eval_count"] == 2
    for line in lines:
        GenerateResponse.model_validate(line)
        assert "message" not in line


def test_generate_client_fed_a_chat_stream():
    """/api/generate with `system` goes to /v1/chat/completions: its chat chunks become `response` lines."""
    stream = sse(chat_chunk({"role": "assistant", "content": "x"}), chat_chunk({}, "stop"), "[DONE]")
    lines = parse_ndjson(run_to_ndjson([stream], api_path="/api/generate")[0])
    assert [line["response"] for line in lines] == ["x", ""] and lines[-1]["done"]


TOOL_STREAM = sse(
    chat_chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chat_chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"}}]}),
    chat_chunk({}, "tool_calls"),
    {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [],
     "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}},
    "[DONE]",
)


def test_tool_call_stream_to_ndjson():
    out, _ = run_to_ndjson([TOOL_STREAM])
    lines = parse_ndjson(out)
    assert len(lines) == 2
    calls = lines[0]["message"]["tool_calls"]
    assert calls == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                     {"function": {"name": "get_time", "arguments": {}}}]
    assert lines[0]["done"] is False
    assert lines[1]["done"] is True and lines[1]["done_reason"] == "stop" and lines[1]["eval_count"] == 8
    for line in lines:
        ChatResponse.model_validate(line)
    for chunks in splits(TOOL_STREAM[:400]):
        assert parse_ndjson(run_to_ndjson(chunks + [TOOL_STREAM[400:]])[0]) == lines


def test_reasoning_deltas_become_thinking():
    stream = sse(chat_chunk({"role": "assistant", "reasoning_content": "hmm"}), chat_chunk({"content": "ok"}),
                 chat_chunk({}, "stop"), "[DONE]")
    lines = parse_ndjson(run_to_ndjson([stream])[0])
    assert lines[0]["message"]["thinking"] == "hmm" and lines[1]["message"]["content"] == "ok"
    ChatResponse.model_validate(lines[0])


@pytest.mark.parametrize("error_event", [
    b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n',
    b'event: error\ndata: {"message": "boom"}\n\n',
    b'error: {"code": 500, "message": "boom", "type": "server_error"}\n\n',
    b'data: {"error": "boom"}\n\n',
])
def test_error_event_becomes_error_line(error_event):
    stream = sse(chat_chunk({"role": "assistant", "content": "par"})) + error_event + sse(
        chat_chunk({"content": "ignored"}), "[DONE]")
    for chunks in splits(stream):
        out, conv = run_to_ndjson(chunks)
        lines = parse_ndjson(out)
        assert lines == [{"model": "m:1b", "message": {"role": "assistant", "content": "par"}, "done": False},
                         {"error": "boom"}]
        assert conv.error == "boom"


def test_missing_done_gives_error_line():
    stream = sse(chat_chunk({"role": "assistant", "content": "a"}), chat_chunk({}, "stop"))
    out, conv = run_to_ndjson([stream])
    lines = parse_ndjson(out)
    assert lines[-1] == {"error": "upstream stream ended before [DONE]"} and conv.error
    out, conv = run_to_ndjson([])
    assert parse_ndjson(out) == [{"error": "upstream stream ended before [DONE]"}]


def test_done_without_trailing_blank_line_is_accepted_at_finish():
    stream = sse(chat_chunk({"role": "assistant", "content": "a"})) + b"data: [DONE]"
    lines = parse_ndjson(run_to_ndjson([stream])[0])
    assert lines[-1]["done"] is True


def test_multi_line_data_and_nothing_after_done():
    event = b"data: {\"choices\": [{\"index\": 0,\ndata: \"delta\": {\"content\": \"hi\"}}]}\n\n"
    conv = OpenAIStreamToNdjson("/api/chat", "m", started_ns=0, clock_ns=FakeClock(0))
    out = conv.feed(event + sse("[DONE]"))
    assert conv.feed(sse(chat_chunk({"content": "late"}))) == b""
    assert conv.finish() == b""
    lines = parse_ndjson(out)
    assert lines[0]["message"]["content"] == "hi" and lines[-1]["done"] is True


def test_five_megabyte_delta():
    big = "x" * (5 * 1024 * 1024)
    stream = sse(chat_chunk({"role": "assistant", "content": big}), chat_chunk({}, "stop"), "[DONE]")
    conv = OpenAIStreamToNdjson("/api/chat", "m", started_ns=0, clock_ns=FakeClock(0))
    out = b"".join(conv.feed(stream[i:i + 65536]) for i in range(0, len(stream), 65536)) + conv.finish()
    lines = parse_ndjson(out)
    assert lines[0]["message"]["content"] == big and lines[-1]["done"] is True


def test_non_streaming_paths_are_refused():
    with pytest.raises(ValueError):
        OpenAIStreamToNdjson("/api/embed", "m", started_ns=0)
    with pytest.raises(ValueError):
        NdjsonToOpenAIStream("/v1/embeddings", "m", request_id="x", created=1, include_usage=False)


# ------------------------------------------------------------------ Ollama NDJSON -> OpenAI SSE


def ollama_line(content: str = "", done: bool = False, **extra) -> bytes:
    obj = {"model": "m:1b", "created_at": "2024-01-01T00:00:00.000000000Z",
           "message": {"role": "assistant", "content": content}, "done": done, **extra}
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode()


RECORDED_NDJSON = (
    ollama_line("The ") + ollama_line("sky é ") + ollama_line('"blue"\n').replace(b"\n", b"\r\n")
    + ollama_line("", True, done_reason="stop", total_duration=5, load_duration=1, prompt_eval_count=4,
                  prompt_eval_duration=1, eval_count=3, eval_duration=2)
)


def sse_events(data: bytes) -> list[str]:
    text = data.decode()
    assert text == "" or text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: "):] for e in events]


def run_to_sse(chunks, api_path="/v1/chat/completions", include_usage=True):
    conv = NdjsonToOpenAIStream(api_path, "m:1b", request_id="chatcmpl-42", created=1700000000,
                                include_usage=include_usage)
    out = b""
    for chunk in chunks:
        piece = conv.feed(chunk)
        assert piece == b"" or piece.endswith(b"\n\n")
        out += piece
    out += conv.finish()
    assert conv.finish() == b""
    return out, conv


def test_recorded_ndjson_to_openai_chunks():
    out, conv = run_to_sse([RECORDED_NDJSON])
    events = sse_events(out)
    assert events[-1] == "[DONE]" and conv.error is None
    chunks = [json.loads(e) for e in events[:-1]]
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert c["id"] == "chatcmpl-42" and c["created"] == 1700000000 and c["model"] == "m:1b"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "The "}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["sky é ", '"blue"\n']
    assert chunks[3]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3,
                                                                 "total_tokens": 7}


def test_ndjson_result_is_independent_of_chunking():
    expected, _ = run_to_sse([RECORDED_NDJSON])
    for chunks in splits(RECORDED_NDJSON):
        assert run_to_sse(chunks)[0] == expected
    assert run_to_sse([bytes([b]) for b in RECORDED_NDJSON])[0] == expected
    for chunks in random_chunkings(RECORDED_NDJSON):
        assert run_to_sse(chunks)[0] == expected


def test_ndjson_without_usage_and_length():
    out, _ = run_to_sse([ollama_line("a") + ollama_line("", True, done_reason="length", eval_count=1)],
                        include_usage=False)
    chunks = [json.loads(e) for e in sse_events(out)[:-1]]
    assert len(chunks) == 2 and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks)


def test_ndjson_done_only_still_sends_role():
    out, _ = run_to_sse([ollama_line("", True, done_reason="stop")], include_usage=False)
    chunks = [json.loads(e) for e in sse_events(out)[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"


def test_ndjson_tool_calls_to_openai_chunks():
    stream = (json.dumps({"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {}}}]}, "done": False}) + "\n").encode()
    stream += ollama_line("", True, done_reason="stop", prompt_eval_count=3, eval_count=9)
    out, _ = run_to_sse([stream])
    chunks = [ChatCompletionChunk.model_validate(json.loads(e)) for e in sse_events(out)[:-1]]
    calls = chunks[0].choices[0].delta.tool_calls
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Paris"}), (1, "get_time", {})]
    assert all(c.id and c.type == "function" for c in calls) and calls[0].id != calls[1].id
    assert chunks[1].choices[0].finish_reason == "tool_calls"
    assert chunks[2].usage.completion_tokens == 9


def test_ndjson_completions_chunks():
    stream = b"".join((json.dumps({"model": "m", "response": t, "done": False}) + "\n").encode() for t in ("a", "b"))
    stream += (json.dumps({"model": "m", "response": "", "done": True, "done_reason": "stop", "context": [1],
                           "prompt_eval_count": 1, "eval_count": 2}) + "\n").encode()
    out, _ = run_to_sse([stream], api_path="/v1/completions")
    chunks = [json.loads(e) for e in sse_events(out)[:-1]]
    assert [c["object"] for c in chunks] == ["text_completion"] * 4
    assert [c["choices"][0]["text"] for c in chunks[:3]] == ["a", "b", ""]
    Completion.model_validate(chunks[2])  # the finishing chunk is a complete Completion
    assert chunks[3]["usage"]["total_tokens"] == 3


def test_ndjson_error_line_becomes_error_event_then_done():
    stream = ollama_line("a") + b'{"error": "model crashed"}\n' + ollama_line("late")
    for chunks in splits(stream):
        out, conv = run_to_sse(chunks)
        events = sse_events(out)
        assert events[-1] == "[DONE]" and len(events) == 3
        assert json.loads(events[1]) == {"error": {"message": "model crashed", "type": "api_error", "param": None,
                                                   "code": None}}
        assert conv.error == "model crashed"


def test_ndjson_truncated_stream_and_garbage():
    out, conv = run_to_sse([ollama_line("a")])
    events = sse_events(out)
    assert "error" in json.loads(events[-2]) and events[-1] == "[DONE]" and conv.error
    out, conv = run_to_sse([b"<html>oops</html>\n"])
    assert "not JSON" in json.loads(sse_events(out)[0])["error"]["message"]
    out, conv = run_to_sse([ollama_line("a") + ollama_line("", True)[:-1]])  # last line without newline
    assert sse_events(out)[-2].startswith("{") and conv.error is None


def test_ndjson_five_megabyte_line():
    big = "y" * (5 * 1024 * 1024)
    stream = ollama_line(big) + ollama_line("", True, done_reason="stop")
    conv = NdjsonToOpenAIStream("/v1/chat/completions", "m", request_id="r", created=1, include_usage=False)
    out = b"".join(conv.feed(stream[i:i + 65536]) for i in range(0, len(stream), 65536)) + conv.finish()
    first = json.loads(sse_events(out)[0])
    assert first["choices"][0]["delta"]["content"] == big


# ------------------------------------------------------------------ non-stream answers


def test_openai_chat_answer_to_ollama_chat():
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            "timings": {"prompt_n": 5, "prompt_ms": 1.5, "predicted_n": 2, "predicted_ms": 20.25}}
    out = openai_to_ollama_response("/api/chat", "m:1b", body, started_ns=0, total_ns=123_456_789)
    ChatResponse.model_validate(out)
    assert re.match(RFC3339, out["created_at"])
    out.pop("created_at")
    assert out == {"model": "m:1b", "message": {"role": "assistant", "content": "Hi there"}, "done": True,
                   "done_reason": "length", "total_duration": 123_456_789, "load_duration": 0,
                   "prompt_eval_count": 5, "prompt_eval_duration": 1_500_000, "eval_count": 2,
                   "eval_duration": 20_250_000}


def test_openai_answer_without_timings_has_zero_phase_durations():
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    out = openai_to_ollama_response("/api/chat", "m", body, started_ns=0, total_ns=10)
    assert out["prompt_eval_duration"] == 0 and out["eval_duration"] == 0 and out["total_duration"] == 10


def test_openai_tool_call_answer_to_ollama():
    body = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "broken", "arguments": "{oops"}}]}}]}
    out = openai_to_ollama_response("/api/chat", "m", body, started_ns=0, total_ns=1)
    ChatResponse.model_validate(out)
    assert out["done_reason"] == "stop" and out["message"]["content"] == ""
    assert out["message"]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                                            {"function": {"name": "broken", "arguments": {"_raw_arguments": "{oops"}}}]


def test_openai_completion_answer_to_generate_and_chat_answer_to_generate():
    body = {"object": "text_completion", "choices": [{"text": "abc", "index": 0, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3}}
    out = openai_to_ollama_response("/api/generate", "m", body, started_ns=0, total_ns=9)
    GenerateResponse.model_validate(out)
    assert out["response"] == "abc" and out["eval_count"] == 3 and "message" not in out
    chat = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": "q"},
                                                      "finish_reason": "stop"}]}
    out = openai_to_ollama_response("/api/generate", "m", chat, started_ns=0, total_ns=9)
    assert out["response"] == "q" and out["eval_count"] == 0
    assert openai_to_ollama_response("/v1/completions", "m", body, started_ns=0, total_ns=9)["response"] == "abc"


def test_openai_embeddings_answer_to_embed_and_embeddings():
    vec = [0.25, -0.5]
    packed = base64.b64encode(struct.pack("<2f", *vec)).decode()
    body = {"object": "list", "model": "e", "usage": {"prompt_tokens": 4, "total_tokens": 4},
            "data": [{"object": "embedding", "index": 1, "embedding": packed},
                     {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]}]}
    out = openai_to_ollama_response("/api/embed", "e", body, started_ns=0, total_ns=77)
    EmbedResponse.model_validate(out)
    assert out == {"model": "e", "embeddings": [[1.0, 0.0], vec], "total_duration": 77, "load_duration": 0,
                   "prompt_eval_count": 4}
    single = openai_to_ollama_response("/api/embeddings", "e", body, started_ns=0, total_ns=77)
    EmbeddingsResponse.model_validate(single)
    assert single == {"embedding": [1.0, 0.0]}


def test_error_bodies_both_ways():
    out = openai_to_ollama_response("/api/chat", "m", {"error": {"message": "model not found", "type": "x"}},
                                    started_ns=0, total_ns=0)
    assert out == {"error": "model not found"}
    out = ollama_to_openai_response("/api/chat", "m", {"error": "busy"}, created=1, request_id="r")
    assert out == {"error": {"message": "busy", "type": "api_error", "param": None, "code": None}}


def test_ollama_chat_answer_to_chat_completion():
    body = {"model": "m", "created_at": "2024-01-01T00:00:00Z", "message": {"role": "assistant", "content": "Hi"},
            "done": True, "done_reason": "stop", "total_duration": 10, "prompt_eval_count": 4, "eval_count": 2}
    out = ollama_to_openai_response("/api/chat", "m:1b", body, created=1700000000, request_id="chatcmpl-7")
    ChatCompletion.model_validate(out)
    assert out == {"id": "chatcmpl-7", "object": "chat.completion", "created": 1700000000, "model": "m:1b",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                "finish_reason": "stop", "logprobs": None}],
                   "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}


def test_ollama_tool_call_answer_to_chat_completion():
    body = {"model": "m", "message": {"role": "assistant", "content": "", "thinking": "let me see", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, "done": True, "done_reason": "stop"}
    out = ollama_to_openai_response("/v1/chat/completions", "m", body, created=1, request_id="chatcmpl-7")
    parsed = ChatCompletion.model_validate(out)
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert choice.message.tool_calls[0].id.startswith("call_")
    assert out["choices"][0]["message"]["reasoning_content"] == "let me see"


def test_ollama_generate_answer_to_text_completion():
    body = {"model": "m", "response": "abc", "done": True, "done_reason": "length", "context": [1, 2],
            "prompt_eval_count": 3, "eval_count": 5}
    out = ollama_to_openai_response("/api/generate", "m", body, created=2, request_id="cmpl-1")
    parsed = Completion.model_validate(out)
    assert parsed.choices[0].text == "abc" and parsed.choices[0].finish_reason == "length"
    assert parsed.usage.total_tokens == 8


def test_ollama_embed_answers_to_embeddings_list():
    out = ollama_to_openai_response("/api/embed", "e", {"model": "e", "embeddings": [[0.1], [0.2]],
                                                        "prompt_eval_count": 2}, created=1, request_id="r")
    parsed = CreateEmbeddingResponse.model_validate(out)
    assert [d.embedding for d in parsed.data] == [[0.1], [0.2]] and parsed.usage.prompt_tokens == 2
    out = ollama_to_openai_response("/api/embeddings", "e", {"embedding": [0.3]}, created=1, request_id="r")
    assert CreateEmbeddingResponse.model_validate(out).data[0].embedding == [0.3]


def test_unknown_answer_paths_raise():
    with pytest.raises(ValueError):
        openai_to_ollama_response("/api/show", "m", {}, started_ns=0, total_ns=0)
    with pytest.raises(ValueError):
        ollama_to_openai_response("/v1/models", "m", {}, created=1, request_id="r")
