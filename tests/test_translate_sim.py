"""Round trips through the simulator: translate, POST, convert back, validate with the official clients' models."""

import json
import time

import aiohttp
import pytest
from ollama._types import ChatResponse, EmbedResponse, EmbeddingsResponse, GenerateResponse
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ollamaproxy.sim import sim_embedding, sim_text
from ollamaproxy.translate.requests import ollama_to_openai, openai_to_ollama
from ollamaproxy.translate.responses import (
    NdjsonToOpenAIStream,
    OpenAIStreamToNdjson,
    ollama_to_openai_response,
    openai_to_ollama_response,
)

MODELS = ["m:1b", "nomic-embed-text"]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def openai_sim(sims):
    return await sims("s", MODELS, kind="openai", default_tokens=12)


@pytest.fixture
async def ollama_sim(sims):
    return await sims("s", MODELS, kind="ollama", default_tokens=12)


async def ollama_via_openai(sim, path: str, payload: dict, chunk_size: int | None = None):
    """What an Ollama client would get for `payload` from an OpenAI-only backend: (answer or lines, translated)."""
    t = ollama_to_openai(path, payload)
    started = time.monotonic_ns()
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.url + t.path, data=t.body, headers=JSON) as resp:
            if not t.stream or resp.content_type == "application/json":
                body = await resp.json()
                return openai_to_ollama_response(path, payload["model"], body, started_ns=started,
                                                 total_ns=time.monotonic_ns() - started), t
            assert resp.content_type == "text/event-stream"
            conv = OpenAIStreamToNdjson(path, payload["model"], started_ns=started)
            out = b""
            try:
                chunks = resp.content.iter_chunked(chunk_size) if chunk_size else resp.content.iter_any()
                async for chunk in chunks:
                    out += conv.feed(chunk)
            except aiohttp.ClientPayloadError:
                pass  # the upstream died mid-stream: finish() reports it
            out += conv.finish()
    text = out.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()], t


async def openai_via_ollama(sim, path: str, payload: dict, chunk_size: int | None = None):
    """What an OpenAI client would get for `payload` from an Ollama backend without /v1."""
    t = openai_to_ollama(path, payload)
    async with aiohttp.ClientSession() as session:
        async with session.post(sim.url + t.path, data=t.body, headers=JSON) as resp:
            if not t.stream or resp.content_type == "application/json":
                body = await resp.json()
                return ollama_to_openai_response(path, payload["model"], body, created=1700000000,
                                                 request_id="chatcmpl-abc"), t
            assert resp.content_type == "application/x-ndjson"
            conv = NdjsonToOpenAIStream(path, payload["model"], request_id="chatcmpl-abc", created=1700000000,
                                        include_usage=t.include_usage)
            out = b""
            try:
                chunks = resp.content.iter_chunked(chunk_size) if chunk_size else resp.content.iter_any()
                async for chunk in chunks:
                    out += conv.feed(chunk)
            except aiohttp.ClientPayloadError:
                pass
            out += conv.finish()
    text = out.decode()
    assert text.endswith("\n\n")
    events = [e.removeprefix("data: ") for e in text.split("\n\n")[:-1]]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]], t


# ------------------------------------------------------------------ Ollama client -> OpenAI-only backend


async def test_ollama_chat_non_stream(openai_sim):
    answer, t = await ollama_via_openai(openai_sim, "/api/chat", {
        "model": "m:1b", "messages": [{"role": "user", "content": "why is the sky blue"}], "stream": False,
        "options": {"num_predict": 5, "temperature": 0.1, "num_ctx": 2048}})
    assert t.unmapped == ("num_ctx",)
    sent = json.loads(openai_sim.stats.bodies[-1])
    assert sent["max_tokens"] == 5 and sent["temperature"] == 0.1 and openai_sim.stats.paths[-1] == "/v1/chat/completions"
    parsed = ChatResponse.model_validate(answer)
    assert parsed.message.content == sim_text(5) and parsed.done and parsed.done_reason == "length"
    assert parsed.eval_count == 5 and parsed.prompt_eval_count == 5 and parsed.total_duration > 0


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
async def test_ollama_chat_stream(openai_sim, chunk_size):
    lines, t = await ollama_via_openai(openai_sim, "/api/chat", {
        "model": "m:1b", "messages": [{"role": "user", "content": "hi"}]}, chunk_size)
    assert t.stream
    parsed = [ChatResponse.model_validate(line) for line in lines]
    assert all(not p.done for p in parsed[:-1]) and parsed[-1].done and parsed[-1].done_reason == "stop"
    assert "".join(p.message.content for p in parsed) == sim_text(12)
    assert parsed[-1].eval_count == 12 and parsed[-1].prompt_eval_count == 1  # from the usage chunk
    assert parsed[-1].total_duration >= parsed[-1].eval_duration >= 0


async def test_ollama_generate_non_stream_and_stream(openai_sim):
    answer, t = await ollama_via_openai(openai_sim, "/api/generate", {
        "model": "m:1b", "prompt": "why", "stream": False, "options": {"num_predict": 3}})
    assert t.path == "/v1/completions"
    parsed = GenerateResponse.model_validate(answer)
    assert parsed.response == sim_text(3) and parsed.done_reason == "length" and parsed.eval_count == 3
    lines, _ = await ollama_via_openai(openai_sim, "/api/generate", {"model": "m:1b", "prompt": "why"}, 5)
    parsed_lines = [GenerateResponse.model_validate(line) for line in lines]
    assert "".join(p.response for p in parsed_lines) == sim_text(12) and parsed_lines[-1].done


async def test_ollama_generate_with_system_uses_chat(openai_sim):
    lines, t = await ollama_via_openai(openai_sim, "/api/generate", {
        "model": "m:1b", "prompt": "why", "system": "be brief", "options": {"num_predict": 4}})
    assert t.path == "/v1/chat/completions" and openai_sim.stats.paths[-1] == "/v1/chat/completions"
    parsed = [GenerateResponse.model_validate(line) for line in lines]
    assert "".join(p.response for p in parsed) == sim_text(4) and parsed[-1].done_reason == "length"
    answer, _ = await ollama_via_openai(openai_sim, "/api/generate", {
        "model": "m:1b", "prompt": "why", "system": "be brief", "stream": False})
    assert GenerateResponse.model_validate(answer).response == sim_text(12)


async def test_ollama_embed_and_embeddings(openai_sim):
    answer, _ = await ollama_via_openai(openai_sim, "/api/embed", {"model": "nomic-embed-text",
                                                                   "input": ["a b", "c"]})
    parsed = EmbedResponse.model_validate(answer)
    assert [list(v) for v in parsed.embeddings] == [sim_embedding("a b", "nomic-embed-text"),
                                                    sim_embedding("c", "nomic-embed-text")]
    assert parsed.prompt_eval_count == 3
    answer, _ = await ollama_via_openai(openai_sim, "/api/embeddings", {"model": "nomic-embed-text", "prompt": "a"})
    assert list(EmbeddingsResponse.model_validate(answer).embedding) == sim_embedding("a", "nomic-embed-text")


async def test_ollama_error_answer_from_openai_backend(openai_sim):
    answer, _ = await ollama_via_openai(openai_sim, "/api/chat", {
        "model": "nope:1b", "messages": [{"role": "user", "content": "x"}]})
    assert set(answer) == {"error"} and "not found" in answer["error"]


async def test_ollama_stream_cut_off_mid_way(openai_sim):
    openai_sim.behaviour.crash_after_chunks = 3
    lines, _ = await ollama_via_openai(openai_sim, "/api/chat", {
        "model": "m:1b", "messages": [{"role": "user", "content": "x"}]})
    assert lines[-1] == {"error": "upstream stream ended before [DONE]"}
    assert all(not line["done"] for line in lines[:-1])


# ------------------------------------------------------------------ OpenAI client -> Ollama backend (no /v1)


async def test_openai_chat_non_stream(ollama_sim):
    answer, t = await openai_via_ollama(ollama_sim, "/v1/chat/completions", {
        "model": "m:1b", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi there"}],
        "max_tokens": 4, "temperature": 0})
    assert t.path == "/api/chat" and ollama_sim.stats.paths[-1] == "/api/chat"
    assert json.loads(ollama_sim.stats.bodies[-1])["options"] == {"temperature": 0, "num_predict": 4}
    parsed = ChatCompletion.model_validate(answer)
    assert parsed.choices[0].message.content == sim_text(4) and parsed.choices[0].finish_reason == "length"
    assert parsed.usage.completion_tokens == 4 and parsed.usage.prompt_tokens == 3


@pytest.mark.parametrize("chunk_size", [None, 1, 13])
async def test_openai_chat_stream_with_usage(ollama_sim, chunk_size):
    chunks, t = await openai_via_ollama(ollama_sim, "/v1/chat/completions", {
        "model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "stream_options": {"include_usage": True}}, chunk_size)
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parsed if p.choices) == sim_text(12)
    assert parsed[-2].choices[0].finish_reason == "stop"
    assert parsed[-1].choices == [] and parsed[-1].usage.completion_tokens == 12


async def test_openai_chat_stream_without_usage(ollama_sim):
    chunks, _ = await openai_via_ollama(ollama_sim, "/v1/chat/completions", {
        "model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 2})
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert all(p.usage is None and p.choices for p in parsed) and parsed[-1].choices[0].finish_reason == "length"


async def test_openai_completions_non_stream_and_stream(ollama_sim):
    answer, t = await openai_via_ollama(ollama_sim, "/v1/completions", {"model": "m:1b", "prompt": "once",
                                                                        "max_tokens": 3})
    assert t.path == "/api/generate"
    parsed = Completion.model_validate(answer)
    assert parsed.choices[0].text == sim_text(3) and parsed.choices[0].finish_reason == "length"
    chunks, _ = await openai_via_ollama(ollama_sim, "/v1/completions", {"model": "m:1b", "prompt": "once",
                                                                        "stream": True})
    assert "".join(c["choices"][0]["text"] for c in chunks) == sim_text(12)
    Completion.model_validate(chunks[-1])


async def test_openai_embeddings(ollama_sim):
    answer, _ = await openai_via_ollama(ollama_sim, "/v1/embeddings", {"model": "nomic-embed-text",
                                                                       "input": ["x", "y z"]})
    parsed = CreateEmbeddingResponse.model_validate(answer)
    assert [d.embedding for d in parsed.data] == [sim_embedding("x", "nomic-embed-text"),
                                                  sim_embedding("y z", "nomic-embed-text")]
    assert [d.index for d in parsed.data] == [0, 1] and parsed.usage.prompt_tokens == 3


async def test_openai_error_answer_from_ollama_backend(ollama_sim):
    answer, _ = await openai_via_ollama(ollama_sim, "/v1/chat/completions", {
        "model": "nope:1b", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert "not found" in answer["error"]["message"]


async def test_openai_stream_cut_off_mid_way(ollama_sim):
    ollama_sim.behaviour.crash_after_chunks = 2
    chunks, _ = await openai_via_ollama(ollama_sim, "/v1/chat/completions", {
        "model": "m:1b", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert "error" in chunks[-1]
    for c in chunks[:-1]:
        ChatCompletionChunk.model_validate(c)
