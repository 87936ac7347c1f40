"""Hold the simulated backend (ollamaproxy.sim) to Ollama's documented API shapes and the OpenAI-compatible ones."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import struct
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ollamaproxy.sim import (
    SIM_BEHAVIOUR,
    SIM_STATS,
    SimBehaviour,
    SimStats,
    create_sim_app,
    serve_sim,
    sim_embedding,
    sim_text,
)

MODELS = ["qwen3:0.6b", "llama3.2", "nomic-embed-text"]

# --------------------------------------------------------------------------- schemas
# Key -> type. Taken from ollama/ollama docs/api.md (section named in each comment); objects are
# compared on their exact key sets so a missing or stray field fails the test.
DURATIONS = {
    "total_duration": int,
    "load_duration": int,
    "prompt_eval_count": int,
    "prompt_eval_duration": int,
    "eval_count": int,
    "eval_duration": int,
}
# docs/api.md "Generate a completion" > "Generate request (Streaming)": a stream object
GENERATE_CHUNK = {"model": str, "created_at": str, "response": str, "done": bool}
# docs/api.md "Generate a completion": the final stream object / "Request (No streaming)" /
# "Request (with suffix)" (done_reason)
GENERATE_FINAL = {**GENERATE_CHUNK, "done_reason": str, "context": list, **DURATIONS}
# docs/api.md "Generate a chat completion" > "Chat Request (Streaming)"
CHAT_CHUNK = {"model": str, "created_at": str, "message": dict, "done": bool}
# docs/api.md "Generate a chat completion": "Final response" / "Chat request (Structured outputs)" (done_reason)
CHAT_FINAL = {**CHAT_CHUNK, "done_reason": str, **DURATIONS}
# docs/api.md "Generate a chat completion": the `message` object (role, content)
MESSAGE = {"role": str, "content": str}
# docs/api.md "Generate a completion" > "Load a model" / "Unload a model"
GENERATE_LOAD = {"model": str, "created_at": str, "response": str, "done": bool, "done_reason": str}
# docs/api.md "Generate a chat completion" > "Load a model" / "Unload a model"
CHAT_LOAD = {"model": str, "created_at": str, "message": dict, "done": bool, "done_reason": str}
# docs/api.md "Show Model Information" / "List Running Models": the `details` object
DETAILS = {
    "parent_model": str,
    "format": str,
    "family": str,
    "families": list,
    "parameter_size": str,
    "quantization_level": str,
}
# docs/api.md "List Local Models" (plus `model`, which Ollama's api/types.go ListModelResponse also sends)
TAG = {"name": str, "model": str, "modified_at": str, "size": int, "digest": str, "details": dict}
# docs/api.md "List Running Models" (context_length: current docs.ollama.com/api/ps, api/types.go)
PS = {
    "name": str,
    "model": str,
    "size": int,
    "digest": str,
    "details": dict,
    "expires_at": str,
    "size_vram": int,
    "context_length": int,
}
# docs/api.md "Show Model Information" (capabilities, modified_at: current docs.ollama.com/api/show)
SHOW = {
    "license": str,
    "modelfile": str,
    "parameters": str,
    "template": str,
    "details": dict,
    "model_info": dict,
    "capabilities": list,
    "modified_at": str,
}
# docs/api.md "Generate Embeddings" (POST /api/embed)
EMBED = {"model": str, "embeddings": list, "total_duration": int, "load_duration": int, "prompt_eval_count": int}
# docs/api.md "Generate Embedding" (legacy POST /api/embeddings)
EMBEDDINGS = {"embedding": list}
# docs/api.md "Version" (GET /api/version)
VERSION = {"version": str}
# docs/api.md "Conventions" is silent on errors; Ollama answers {"error": "..."} (api/client.go StatusError)
OLLAMA_ERROR = {"error": str}

# OpenAI-compatible side: ollama docs/openai.md + the OpenAI API reference it follows.
USAGE = {"prompt_tokens": int, "completion_tokens": int, "total_tokens": int}
CHAT_COMPLETION = {
    "id": str, "object": str, "created": int, "model": str, "system_fingerprint": str, "choices": list, "usage": dict,
}
CHAT_CHOICE = {"index": int, "message": dict, "finish_reason": str}
CHUNK = {"id": str, "object": str, "created": int, "model": str, "system_fingerprint": str, "choices": list}
CHUNK_CHOICE = {"index": int, "delta": dict, "finish_reason": (str, type(None))}
COMPLETION_CHOICE = {"text": str, "index": int, "logprobs": type(None), "finish_reason": str}
COMPLETION_CHUNK_CHOICE = {"text": str, "index": int, "finish_reason": (str, type(None))}
V1_EMBEDDINGS = {"object": str, "data": list, "model": str, "usage": dict}
V1_EMBEDDING = {"object": str, "embedding": list, "index": int}
V1_MODELS = {"object": str, "data": list}
V1_MODEL = {"id": str, "object": str, "created": int, "owned_by": str}
OPENAI_ERROR = {"message": str, "type": str, "param": type(None), "code": type(None)}

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


def check(obj: Any, schema: dict[str, Any]) -> None:
    """Exact key set and value types (bool is not accepted where int is asked)."""
    assert isinstance(obj, dict), obj
    assert set(obj) == set(schema), f"keys {sorted(obj)} != {sorted(schema)}"
    for key, typ in schema.items():
        val = obj[key]
        assert isinstance(val, typ), f"{key}={val!r} is not {typ}"
        if typ is int:
            assert not isinstance(val, bool), key


def parse_time(s: str) -> datetime:
    assert RFC3339.match(s), s
    head, _, frac = s.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + ("." + frac[:6] if frac else "")).replace(tzinfo=timezone.utc)


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition with a deadline (never a fixed sleep as synchronisation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


def ndjson(raw: bytes) -> list[dict[str, Any]]:
    """Strict NDJSON: every line \\n-terminated, each one JSON object."""
    text = raw.decode()
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert lines and all(lines)
    return [json.loads(line) for line in lines]


def sse(raw: bytes) -> list[str]:
    """Strict SSE as OpenAI/Ollama send it: `data: ...` events separated by a blank line."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


@pytest.fixture
async def start_sim():
    clients: list[TestClient] = []

    async def start(name: str = "sim1", models: list[str] | None = None, **kw: Any) -> TestClient:
        kw.setdefault("tokens_per_second", 0)
        app = create_sim_app(name, MODELS if models is None else models, **kw)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()


def beh(client: TestClient) -> SimBehaviour:
    return client.app[SIM_BEHAVIOUR]


def stats(client: TestClient) -> SimStats:
    return client.app[SIM_STATS]


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


# --------------------------------------------------------------------------- Ollama native API


async def test_root_head_version(start_sim):
    c = await start_sim(version="0.9.1")
    r = await c.get("/")
    assert r.status == 200 and await r.text() == "Ollama is running"
    assert r.content_type == "text/plain"
    assert r.headers["X-Sim-Backend"] == "sim1"
    r = await c.head("/")
    assert r.status == 200 and r.headers["X-Sim-Backend"] == "sim1"
    r = await c.get("/api/version")
    body = await r.json()
    check(body, VERSION)
    assert body["version"] == "0.9.1"


async def test_tags_schema_and_latest(start_sim):
    c = await start_sim()
    body = await (await c.get("/api/tags")).json()
    assert set(body) == {"models"}
    names = [m["name"] for m in body["models"]]
    assert names == ["qwen3:0.6b", "llama3.2:latest", "nomic-embed-text:latest"]
    for m in body["models"]:
        check(m, TAG)
        check(m["details"], DETAILS)
        assert m["model"] == m["name"]
        assert re.fullmatch(r"[0-9a-f]{64}", m["digest"])
        assert m["size"] > 0
        parse_time(m["modified_at"])
    # deterministic from the name
    again = await (await c.get("/api/tags")).json()
    assert again == body
    c2 = await start_sim(name="other", models=["llama3.2:latest"])
    other = (await (await c2.get("/api/tags")).json())["models"][0]
    assert other["size"] == body["models"][1]["size"] and other["digest"] == body["models"][1]["digest"]


async def test_generate_stream_ndjson(start_sim):
    c = await start_sim(default_tokens=7)
    r = await c.post("/api/generate", json={"model": "llama3.2", "prompt": "Why is the sky blue?"})
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/x-ndjson"
    objs = ndjson(await r.read())
    assert len(objs) == 8
    for o in objs[:-1]:
        check(o, GENERATE_CHUNK)
        assert o["done"] is False and o["model"] == "llama3.2"
        parse_time(o["created_at"])
    final = objs[-1]
    check(final, GENERATE_FINAL)
    assert final["done"] is True and final["done_reason"] == "stop" and final["response"] == ""
    assert all(isinstance(x, int) for x in final["context"])
    assert final["eval_count"] == 7 and final["prompt_eval_count"] == 5
    assert "".join(o["response"] for o in objs) == sim_text(7)


async def test_chat_stream_ndjson(start_sim):
    c = await start_sim(default_tokens=5)
    r = await c.post("/api/chat", json={"model": "qwen3:0.6b",
                                        "messages": [{"role": "user", "content": "why is the sky blue?"}]})
    assert r.headers["Content-Type"] == "application/x-ndjson"
    objs = ndjson(await r.read())
    for o in objs[:-1]:
        check(o, CHAT_CHUNK)
        check(o["message"], MESSAGE)
        assert o["message"]["role"] == "assistant" and o["done"] is False
    final = objs[-1]
    check(final, CHAT_FINAL)
    check(final["message"], MESSAGE)
    assert final["done"] is True and final["done_reason"] == "stop" and final["message"]["content"] == ""
    assert all(final[k] >= 0 for k in DURATIONS) and final["total_duration"] > 0
    assert "".join(o["message"]["content"] for o in objs) == sim_text(5)


async def test_non_stream_answers(start_sim):
    c = await start_sim(default_tokens=4)
    r = await c.post("/api/chat", json={"model": "qwen3:0.6b", "stream": False,
                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.content_type == "application/json"
    body = await r.json()
    check(body, CHAT_FINAL)
    assert body["message"] == {"role": "assistant", "content": sim_text(4)}
    r = await c.post("/api/generate", json={"model": "qwen3:0.6b", "prompt": "hi", "stream": False})
    body = await r.json()
    check(body, GENERATE_FINAL)
    assert body["response"] == sim_text(4) and body["done_reason"] == "stop"
    # raw mode returns no context (docs/api.md "Request (Raw Mode)")
    r = await c.post("/api/generate", json={"model": "qwen3:0.6b", "prompt": "hi", "stream": False, "raw": True})
    body = await r.json()
    assert "context" not in body
    check(body, {k: v for k, v in GENERATE_FINAL.items() if k != "context"})


async def test_num_predict_gives_length(start_sim):
    c = await start_sim(default_tokens=10)
    for path, extra, key in [("/api/generate", {"prompt": "hi"}, "response"),
                             ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}, "message")]:
        r = await c.post(path, json={"model": "llama3.2", "options": {"num_predict": 3}, **extra})
        objs = ndjson(await r.read())
        assert len(objs) == 4
        assert objs[-1]["done_reason"] == "length" and objs[-1]["eval_count"] == 3
        r = await c.post(path, json={"model": "llama3.2", "stream": False, "options": {"num_predict": 2}, **extra})
        body = await r.json()
        assert body["done_reason"] == "length" and body["eval_count"] == 2
        text = body["response"] if key == "response" else body["message"]["content"]
        assert text == sim_text(2)


async def test_durations_follow_tokens_per_second(start_sim):
    c = await start_sim(tokens_per_second=4000, default_tokens=8)
    body = await (await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})).json()
    # docs/api.md: tokens/s = eval_count / eval_duration * 10^9
    assert body["eval_count"] / body["eval_duration"] * 1e9 == pytest.approx(4000, rel=1e-3)
    assert body["total_duration"] >= body["eval_duration"] + body["prompt_eval_duration"]


async def test_load_and_unload_requests(start_sim):
    c = await start_sim(loaded=[])
    assert (await (await c.get("/api/ps")).json()) == {"models": []}
    r = await c.post("/api/generate", json={"model": "llama3.2"})
    body = await r.json()
    check(body, GENERATE_LOAD)
    assert body["done_reason"] == "load" and body["response"] == ""
    ps = (await (await c.get("/api/ps")).json())["models"]
    assert [m["name"] for m in ps] == ["llama3.2:latest"]
    body = await (await c.post("/api/generate", json={"model": "llama3.2", "keep_alive": 0})).json()
    check(body, GENERATE_LOAD)
    assert body["done_reason"] == "unload"
    assert (await (await c.get("/api/ps")).json())["models"] == []
    body = await (await c.post("/api/chat", json={"model": "qwen3:0.6b", "messages": []})).json()
    check(body, CHAT_LOAD)
    assert body["done_reason"] == "load" and body["message"] == {"role": "assistant", "content": ""}
    body = await (await c.post("/api/chat", json={"model": "qwen3:0.6b", "messages": [], "keep_alive": 0})).json()
    assert body["done_reason"] == "unload"
    assert (await (await c.get("/api/ps")).json())["models"] == []


async def test_ps_after_request_and_keep_alive(start_sim):
    c = await start_sim(loaded=["qwen3:0.6b"])
    ps = (await (await c.get("/api/ps")).json())["models"]
    assert [m["name"] for m in ps] == ["qwen3:0.6b"]
    before = datetime.now(timezone.utc)
    r = await c.post("/api/chat", json={"model": "llama3.2", "stream": False, "options": {"num_ctx": 8192},
                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200
    ps = {m["name"]: m for m in (await (await c.get("/api/ps")).json())["models"]}
    assert set(ps) == {"qwen3:0.6b", "llama3.2:latest"}
    entry = ps["llama3.2:latest"]
    check(entry, PS)
    check(entry["details"], DETAILS)
    assert entry["size_vram"] == entry["size"] > 0
    assert entry["context_length"] == 8192
    expires = parse_time(entry["expires_at"])
    assert before + timedelta(minutes=4) < expires < before + timedelta(minutes=6)  # default keep_alive 5m
    # keep_alive as a duration string, then 0 unloads after the request
    await (await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False,
                                               "keep_alive": "1h"})).read()
    entry = {m["name"]: m for m in (await (await c.get("/api/ps")).json())["models"]}["llama3.2:latest"]
    assert parse_time(entry["expires_at"]) > before + timedelta(minutes=55)
    await (await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False,
                                               "keep_alive": 0})).read()
    ps = [m["name"] for m in (await (await c.get("/api/ps")).json())["models"]]
    assert ps == ["qwen3:0.6b"]
    r = await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "keep_alive": "soon"})
    assert r.status == 400
    check(await r.json(), OLLAMA_ERROR)


async def test_max_loaded_evicts_lru(start_sim):
    c = await start_sim(loaded=["qwen3:0.6b"])
    beh(c).max_loaded = 1
    await (await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})).read()
    ps = [m["name"] for m in (await (await c.get("/api/ps")).json())["models"]]
    assert ps == ["llama3.2:latest"]


async def test_model_name_latest_matching(start_sim):
    c = await start_sim(models=["llama3.2:latest", "qwen3:0.6b"])
    for name in ("llama3.2", "llama3.2:latest", "LLAMA3.2"):
        r = await c.post("/api/chat", json={"model": name, "stream": False,
                                            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status == 200
        assert (await r.json())["model"] == name  # Ollama echoes the requested name
    for name in ("llama3.2:1b", "qwen3", "qwen3:latest"):
        r = await c.post("/api/chat", json={"model": name, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status == 404, name


async def test_unknown_model_404_both_shapes(start_sim):
    c = await start_sim()
    for path, body in [
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/api/generate", {"prompt": "hi"}),
        ("/api/embed", {"input": "hi"}),
        ("/api/embeddings", {"prompt": "hi"}),
        ("/api/show", {}),
    ]:
        r = await c.post(path, json={"model": "nope", **body})
        assert r.status == 404, path
        err = await r.json()
        check(err, OLLAMA_ERROR)
        assert err["error"] == 'model "nope" not found, try pulling it first'
        assert r.headers["X-Sim-Backend"] == "sim1"
    for path, body in [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"prompt": "hi"}),
        ("/v1/embeddings", {"input": "hi"}),
    ]:
        r = await c.post(path, json={"model": "nope", **body})
        assert r.status == 404, path
        err = await r.json()
        assert set(err) == {"error"}
        check(err["error"], OPENAI_ERROR)
        assert err["error"]["type"] == "not_found_error" and "nope" in err["error"]["message"]
    r = await c.get("/v1/models/nope")
    assert r.status == 404
    check((await r.json())["error"], OPENAI_ERROR)


async def test_bad_requests_400_both_shapes(start_sim):
    c = await start_sim()
    hdr = {"Content-Type": "application/json"}
    for path in ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"):
        for data in (b"{not json", b"", b"[1, 2]"):
            r = await c.post(path, data=data, headers=hdr)
            assert r.status == 400, (path, data)
            check(await r.json(), OLLAMA_ERROR)
        r = await c.post(path, json={"prompt": "hi"})
        assert r.status == 400
        assert (await r.json())["error"] == "model is required"
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        r = await c.post(path, data=b"{not json", headers=hdr)
        assert r.status == 400, path
        err = (await r.json())["error"]
        check(err, OPENAI_ERROR)
        assert err["type"] == "invalid_request_error"
        r = await c.post(path, json={"messages": [{"role": "user", "content": "x"}], "prompt": "x", "input": "x"})
        assert r.status == 400
    # an embedding-only model cannot chat
    r = await c.post("/api/chat", json={"model": "nomic-embed-text", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 400
    check(await r.json(), OLLAMA_ERROR)


async def test_embed_and_legacy_embeddings(start_sim):
    c = await start_sim()
    sky, grass = "Why is the sky blue?", "Why is the grass green?"
    body = await (await c.post("/api/embed", json={"model": "nomic-embed-text", "input": sky})).json()
    check(body, EMBED)
    assert len(body["embeddings"]) == 1 and body["prompt_eval_count"] == 5
    vec = body["embeddings"][0]
    assert all(isinstance(x, float) for x in vec)
    assert math.isclose(math.sqrt(sum(x * x for x in vec)), 1.0, rel_tol=1e-9)
    body2 = await (await c.post("/api/embed", json={"model": "nomic-embed-text:latest", "input": [sky, grass]})).json()
    check(body2, EMBED)
    assert body2["embeddings"][0] == vec and body2["embeddings"][1] != vec
    assert vec == sim_embedding(sky, "nomic-embed-text")
    legacy = await (await c.post("/api/embeddings", json={"model": "nomic-embed-text", "prompt": sky})).json()
    check(legacy, EMBEDDINGS)
    assert legacy["embedding"] == vec


async def test_show_schema(start_sim):
    c = await start_sim()
    body = await (await c.post("/api/show", json={"model": "llama3.2"})).json()
    check(body, SHOW)
    check(body["details"], DETAILS)
    assert body["model_info"]["general.architecture"] == body["details"]["family"]
    assert "completion" in body["capabilities"]
    emb = await (await c.post("/api/show", json={"model": "nomic-embed-text"})).json()
    assert emb["capabilities"] == ["embedding"]


# --------------------------------------------------------------------------- OpenAI-compatible API


async def test_v1_chat_non_stream(start_sim):
    c = await start_sim(default_tokens=6)
    r = await c.post("/v1/chat/completions", json={"model": "llama3.2",
                                                   "messages": [{"role": "user", "content": "say hi"}]})
    assert r.content_type == "application/json"
    body = await r.json()
    check(body, CHAT_COMPLETION)
    assert body["object"] == "chat.completion" and body["model"] == "llama3.2"
    check(body["choices"][0], CHAT_CHOICE)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": sim_text(6)}
    assert body["choices"][0]["finish_reason"] == "stop"
    check(body["usage"], USAGE)
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
    for key in ("max_tokens", "max_completion_tokens"):
        body = await (await c.post("/v1/chat/completions", json={
            "model": "llama3.2", key: 2, "messages": [{"role": "user", "content": "x"}]})).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["choices"][0]["message"]["content"] == sim_text(2)


async def test_v1_chat_stream_sse(start_sim):
    c = await start_sim(default_tokens=4)
    for include_usage in (True, False):
        req: dict[str, Any] = {"model": "llama3.2", "stream": True, "max_tokens": 3,
                               "messages": [{"role": "user", "content": "x"}]}
        if include_usage:
            req["stream_options"] = {"include_usage": True}
        r = await c.post("/v1/chat/completions", json=req)
        assert r.headers["Content-Type"] == "text/event-stream"
        events = sse(await r.read())
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        content = chunks[:3]
        for ch in content:
            check(ch, CHUNK)
            assert ch["object"] == "chat.completion.chunk"
            check(ch["choices"][0], CHUNK_CHOICE)
            assert ch["choices"][0]["finish_reason"] is None
        assert "".join(ch["choices"][0]["delta"]["content"] for ch in content) == sim_text(3)
        final = chunks[3]
        check(final, CHUNK)
        assert final["choices"][0]["finish_reason"] == "length"
        if include_usage:
            assert len(chunks) == 5
            usage_chunk = chunks[4]
            check(usage_chunk, {**CHUNK, "usage": dict})
            assert usage_chunk["choices"] == []
            check(usage_chunk["usage"], USAGE)
            assert usage_chunk["usage"]["completion_tokens"] == 3
        else:
            assert len(chunks) == 4
        assert len({ch["id"] for ch in chunks}) == 1


async def test_v1_completions(start_sim):
    c = await start_sim(default_tokens=3)
    body = await (await c.post("/v1/completions", json={"model": "qwen3:0.6b", "prompt": "once upon"})).json()
    check(body, CHAT_COMPLETION)
    assert body["object"] == "text_completion"
    check(body["choices"][0], COMPLETION_CHOICE)
    assert body["choices"][0]["text"] == sim_text(3) and body["choices"][0]["finish_reason"] == "stop"
    r = await c.post("/v1/completions", json={"model": "qwen3:0.6b", "prompt": "once upon", "stream": True,
                                              "max_tokens": 2, "stream_options": {"include_usage": True}})
    events = sse(await r.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for ch in chunks[:-1]:
        check(ch, CHUNK)
        assert ch["object"] == "text_completion"
        check(ch["choices"][0], COMPLETION_CHUNK_CHOICE)
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


async def test_v1_embeddings_and_models(start_sim):
    c = await start_sim()
    body = await (await c.post("/v1/embeddings", json={"model": "nomic-embed-text", "input": ["a b", "c"]})).json()
    check(body, V1_EMBEDDINGS)
    assert body["object"] == "list"
    for i, item in enumerate(body["data"]):
        check(item, V1_EMBEDDING)
        assert item["object"] == "embedding" and item["index"] == i
    assert body["data"][0]["embedding"] == sim_embedding("a b", "nomic-embed-text")
    check(body["usage"], {"prompt_tokens": int, "total_tokens": int})
    b64 = await (await c.post("/v1/embeddings", json={"model": "nomic-embed-text", "input": "a b",
                                                      "encoding_format": "base64"})).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(body["data"][0]["embedding"], rel=1e-6)
    models = await (await c.get("/v1/models")).json()
    check(models, V1_MODELS)
    assert models["object"] == "list"
    for m in models["data"]:
        check(m, V1_MODEL)
        assert m["object"] == "model"
    assert [m["id"] for m in models["data"]] == ["qwen3:0.6b", "llama3.2:latest", "nomic-embed-text:latest"]
    one = await (await c.get("/v1/models/llama3.2")).json()
    check(one, V1_MODEL)


async def test_kind_openai_has_no_ollama_routes(start_sim):
    c = await start_sim(name="lcpp", models=["smollm2"], kind="openai")
    for path in ("/api/tags", "/api/ps", "/api/version"):
        assert (await c.get(path)).status == 404
    for path in ("/api/chat", "/api/generate", "/api/embed", "/api/show"):
        r = await c.post(path, json={"model": "smollm2"})
        assert r.status == 404 and r.headers["X-Sim-Backend"] == "lcpp"
    r = await c.get("/")
    assert r.status == 200 and "Ollama is running" not in await r.text()
    assert (await (await c.get("/health")).json()) == {"status": "ok"}
    models = await (await c.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["smollm2:latest"]
    # llama.cpp answers without a model name with its one model
    body = await (await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})).json()
    check(body, CHAT_COMPLETION)
    with pytest.raises(ValueError):
        create_sim_app("x", ["a"], kind="vllm")


# --------------------------------------------------------------------------- knobs


async def test_fail_status_count_and_retry_after(start_sim):
    c = await start_sim()
    b = beh(c)
    b.fail_status, b.fail_count, b.retry_after = 503, 2, "7"
    r = await c.post("/api/chat", json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 503 and r.headers["Retry-After"] == "7"
    check(await r.json(), OLLAMA_ERROR)
    r = await c.post("/v1/chat/completions", json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 503 and r.headers["Retry-After"] == "7"
    check((await r.json())["error"], OPENAI_ERROR)
    assert b.fail_status is None and b.fail_count is None  # cleared after 2
    r = await c.post("/api/chat", json={"model": "llama3.2", "stream": False,
                                        "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200 and "Retry-After" not in r.headers
    # until changed when fail_count is None; non-inference routes are untouched
    b.fail_status, b.retry_after = 429, None
    for _ in range(3):
        r = await c.post("/api/embed", json={"model": "llama3.2", "input": "x"})
        assert r.status == 429 and "Retry-After" not in r.headers
    assert (await c.get("/api/tags")).status == 200
    assert (await c.post("/api/show", json={"model": "llama3.2"})).status == 200
    s = stats(c)
    assert s.failed == 5 and s.requests == 6 and s.completed == 1


async def test_health_status(start_sim):
    c = await start_sim()
    beh(c).health_status = 401
    for path in ("/api/version", "/api/tags", "/api/ps"):
        r = await c.get(path)
        assert r.status == 401
        check(await r.json(), OLLAMA_ERROR)
    r = await c.get("/v1/models")
    assert r.status == 401
    check((await r.json())["error"], OPENAI_ERROR)
    assert (await c.get("/_sim/stats")).status == 200
    beh(c).health_status = None
    assert (await c.get("/api/version")).status == 200


async def test_crash_after_chunks_ndjson_and_sse(start_sim):
    c = await start_sim(default_tokens=20)
    beh(c).crash_after_chunks = 3
    r = await c.post("/api/chat", json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 200
    lines = []
    with pytest.raises(aiohttp.ClientError):
        async for line in r.content:
            lines.append(json.loads(line))
    assert len(lines) <= 3 and not any(o["done"] for o in lines)
    r.close()
    r = await c.post("/v1/chat/completions", json={"model": "llama3.2", "stream": True,
                                                   "messages": [{"role": "user", "content": "x"}]})
    with pytest.raises(aiohttp.ClientError):
        await r.read()
    r.close()
    # non-stream: the backend dies before the answer
    with pytest.raises(aiohttp.ClientError):
        r = await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "stream": False})
        await r.read()
    await wait_for(lambda: stats(c).active == 0)
    s = stats(c)
    assert s.crashed == 3 and s.completed == 0
    # a limit beyond the stream's length lets it finish
    beh(c).crash_after_chunks = 1000
    r = await c.post("/api/chat", json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]})
    assert ndjson(await r.read())[-1]["done"] is True


async def test_hold_keeps_requests_in_flight(start_sim):
    c = await start_sim(default_tokens=2)
    gate = asyncio.Event()
    beh(c).hold = gate

    async def chat() -> dict[str, Any]:
        r = await c.post("/api/chat", json={"model": "llama3.2", "stream": False,
                                            "messages": [{"role": "user", "content": "x"}]})
        return await r.json()

    tasks = [asyncio.create_task(chat()) for _ in range(3)]
    await wait_for(lambda: stats(c).active == 3)
    assert not any(t.done() for t in tasks)
    assert stats(c).completed == 0 and stats(c).max_active == 3
    # model shows as resident while its requests are held
    ps = [m["name"] for m in (await (await c.get("/api/ps")).json())["models"]]
    assert "llama3.2:latest" in ps
    gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r["message"]["content"] == sim_text(2) for r in results)
    s = stats(c)
    assert s.completed == 3 and s.active == 0 and s.max_active == 3 and s.requests == 3


async def test_cancelled_when_client_goes_away(start_sim):
    c = await start_sim(tokens_per_second=2000)
    r = await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x", "options": {"num_predict": 100000}})
    first = json.loads(await r.content.readline())
    assert first["done"] is False
    await wait_for(lambda: stats(c).active == 1)
    r.close()
    await wait_for(lambda: stats(c).cancelled == 1)
    await wait_for(lambda: stats(c).active == 0)
    assert stats(c).completed == 0


async def test_stats_bodies_and_paths(start_sim):
    c = await start_sim(default_tokens=1)
    for i in range(105):
        r = await c.post("/api/generate", json={"model": "llama3.2", "prompt": f"p{i}", "stream": False})
        await r.read()
    s = stats(c)
    assert s.requests == 105 and s.completed == 105 and s.max_active == 1
    assert len(s.bodies) == len(s.paths) == 100
    assert json.loads(s.bodies[-1])["prompt"] == "p104" and json.loads(s.bodies[0])["prompt"] == "p5"
    assert set(s.paths) == {"/api/generate"}
    # non-inference routes are not counted
    await (await c.get("/api/tags")).read()
    await (await c.post("/api/show", json={"model": "llama3.2"})).read()
    assert s.requests == 105


async def test_management_endpoints(start_sim):
    c = await start_sim(watts=42.0)
    r = await c.post("/_sim/behaviour", json={"tokens_per_second": 0, "fail_status": 500, "fail_count": 1,
                                              "retry_after": "3", "crash_after_chunks": None, "health_status": None})
    assert r.status == 200
    b = beh(c)
    assert (b.fail_status, b.fail_count, b.retry_after) == (500, 1, "3")
    assert (await r.json())["fail_status"] == 500
    r = await c.post("/api/generate", json={"model": "llama3.2", "prompt": "x"})
    assert r.status == 500 and r.headers["Retry-After"] == "3"
    for bad in ({"hold": True}, {"nonsense": 1}, {"fail_status": "x"}, {"tokens_per_second": "fast"}):
        assert (await c.post("/_sim/behaviour", json=bad)).status == 400, bad
    assert (await c.post("/_sim/behaviour", data=b"{")).status == 400
    st = await (await c.get("/_sim/stats")).json()
    assert "bodies" not in st
    assert st["requests"] == 1 and st["failed"] == 1 and st["name"] == "sim1" and st["watts"] == 42.0
    for key in ("requests", "active", "max_active", "cancelled", "completed"):
        assert isinstance(st[key], int)
    assert st["paths"] == ["/api/generate"]
    got = await (await c.get("/_sim/behaviour")).json()
    assert got["fail_status"] is None and "hold" not in got
    r = await c.post("/_sim/stats/reset")
    assert (await r.json())["requests"] == 0


async def test_serve_sim_logs_and_serves(capsys):
    task = asyncio.create_task(serve_sim("127.0.0.1", 0, "cli", ["llama3.2"], 0, 5.0, kind="ollama"))
    captured = ""

    def logged() -> bool:
        nonlocal captured
        captured += capsys.readouterr().err
        return "listening" in captured or task.done()

    try:
        await wait_for(logged)
        m = re.search(r"sim cli listening on http://127\.0\.0\.1:(\d+) models=llama3\.2:latest", captured)
        assert m, captured
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{m.group(1)}/api/version") as r:
                assert (await r.json()) == {"version": "0.6.2"}
                assert r.headers["X-Sim-Backend"] == "cli"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --------------------------------------------------------------------------- official clients


async def test_official_ollama_client(start_sim):
    import ollama

    c = await start_sim(default_tokens=4, loaded=[])
    client = ollama.AsyncClient(host=base_url(c))
    try:
        resp = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
        assert resp.message.content == sim_text(4) and resp.done and resp.done_reason == "stop"
        parts = [p async for p in await client.chat(model="llama3.2", stream=True,
                                                    messages=[{"role": "user", "content": "hi"}])]
        assert "".join(p.message.content for p in parts) == sim_text(4)
        assert parts[-1].done and parts[-1].eval_count == 4
        gen = await client.generate(model="qwen3:0.6b", prompt="hi", options={"num_predict": 2})
        assert gen.response == sim_text(2) and gen.done_reason == "length" and gen.context
        parts = [p async for p in await client.generate(model="qwen3:0.6b", prompt="hi", stream=True)]
        assert "".join(p.response for p in parts) == sim_text(4)
        emb = await client.embed(model="nomic-embed-text", input=["a", "b"])
        assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 8
        old = await client.embeddings(model="nomic-embed-text", prompt="a")
        assert list(old.embedding) == list(emb.embeddings[0])
        listed = await client.list()
        assert [m.model for m in listed.models] == ["qwen3:0.6b", "llama3.2:latest", "nomic-embed-text:latest"]
        assert listed.models[0].details.quantization_level == "Q4_K_M"
        ps = await client.ps()
        assert {m.model for m in ps.models} == {"qwen3:0.6b", "llama3.2:latest", "nomic-embed-text:latest"}
        assert all(m.expires_at is not None and m.size_vram for m in ps.models)
        shown = await client.show("llama3.2")
        assert shown.modelinfo and shown.details.family
        with pytest.raises(ollama.ResponseError) as exc:
            await client.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
        assert exc.value.status_code == 404 and "not found" in exc.value.error
    finally:
        await client._client.aclose()


async def test_official_openai_client(start_sim):
    import openai

    c = await start_sim(default_tokens=5)
    client = openai.AsyncOpenAI(base_url=base_url(c) + "/v1", api_key="x", max_retries=0)
    try:
        resp = await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == sim_text(5)
        assert resp.choices[0].finish_reason == "stop" and resp.usage.completion_tokens == 5
        stream = await client.chat.completions.create(model="llama3.2", stream=True, max_tokens=3,
                                                      stream_options={"include_usage": True},
                                                      messages=[{"role": "user", "content": "hi"}])
        text, finish, usage = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
            if chunk.usage:
                usage = chunk.usage
        assert text == sim_text(3) and finish == "length" and usage.completion_tokens == 3
        comp = await client.completions.create(model="qwen3:0.6b", prompt="once")
        assert comp.choices[0].text == sim_text(5)
        emb = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
        models = [m.id async for m in client.models.list()]
        assert "llama3.2:latest" in models
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
        beh(c).fail_status, beh(c).fail_count = 503, 1
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()


async def test_shutdown_drops_held_requests():
    app = create_sim_app("gone", ["llama3.2"], tokens_per_second=0)
    app[SIM_BEHAVIOUR].hold = asyncio.Event()
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:

        async def chat() -> bytes:
            async with session.post(server.make_url("/api/chat"),
                                    json={"model": "llama3.2", "messages": [{"role": "user", "content": "x"}]}) as r:
                return await r.read()

        task = asyncio.create_task(chat())
        await wait_for(lambda: app[SIM_STATS].active == 1)
        await server.close()  # returns although the hold was never released
        with pytest.raises(aiohttp.ClientError):
            await task
    assert app[SIM_STATS].cancelled == 1 and app[SIM_STATS].active == 0
