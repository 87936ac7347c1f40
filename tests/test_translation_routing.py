"""Every client reaches every backend: Ollama clients on llama.cpp, OpenAI clients on an Ollama without /v1."""

import asyncio
import json

import ollama
import openai
import pytest

from conftest import backend_entry, wait_until
from llamacpp_server import DEFAULT_ALIAS


@pytest.fixture
async def llama_router(llamacpp_server, llamacpp_embedding_server, routers):
    return await routers([
        backend_entry(llamacpp_server.url, "llamacpp", kind="openai", hardware="cpu", max_concurrent=2),
        backend_entry(llamacpp_embedding_server.url, "llamacpp-embed", kind="openai", hardware="cpu",
                      models=["smollm2*"]),
    ])


@pytest.mark.llamacpp
async def test_ollama_client_chats_and_generates_with_llamacpp(llamacpp_server, routers):
    router = await routers([backend_entry(llamacpp_server.url, "llamacpp", kind="openai", max_concurrent=2)])
    client = ollama.AsyncClient(host=router.url)
    reply = await client.chat(model=DEFAULT_ALIAS, messages=[{"role": "user", "content": "Say hi."}],
                              options={"num_predict": 8, "temperature": 0}, stream=False)
    assert reply.done and reply.message.content and reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.total_duration > 0
    parts = [p async for p in await client.chat(model=DEFAULT_ALIAS, stream=True, options={"num_predict": 8},
                                                 messages=[{"role": "user", "content": "Count to three."}])]
    assert len(parts) >= 3 and parts[-1].done and "".join(p.message.content for p in parts).strip()
    generated = await client.generate(model=DEFAULT_ALIAS, prompt="The sky is", options={"num_predict": 6})
    assert generated.done and generated.response
    streamed = [p async for p in await client.generate(model=DEFAULT_ALIAS, prompt="Hello", stream=True,
                                                        options={"num_predict": 6})]
    assert streamed[-1].done and streamed[-1].eval_count
    loaded = await client.generate(model=DEFAULT_ALIAS, prompt="")  # `ollama run` preloads like this
    assert loaded.done_reason == "load"
    listed = await client.list()
    assert DEFAULT_ALIAS in [m.model for m in listed.models]
    shown = await client.show(DEFAULT_ALIAS)
    assert shown.details is not None


@pytest.mark.llamacpp
async def test_ollama_client_embeds_with_llamacpp(llamacpp_embedding_server, routers):
    router = await routers([backend_entry(llamacpp_embedding_server.url, "embed", kind="openai")])
    client = ollama.AsyncClient(host=router.url)
    embedded = await client.embed(model=DEFAULT_ALIAS, input=["hello", "world"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 16


@pytest.mark.llamacpp
async def test_translation_is_reported_and_pass_through_is_not(llamacpp_server, routers, http):
    router = await routers([backend_entry(llamacpp_server.url, "llamacpp", kind="openai")])
    body = {"model": DEFAULT_ALIAS, "messages": [{"role": "user", "content": "hi"}], "stream": False,
            "options": {"num_predict": 4, "num_ctx": 4096}, "keep_alive": "5m"}
    async with http.post(router.url + "/api/chat", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["X-Routing-Reason"].endswith("+translated")
        assert set(resp.headers["X-Unmapped-Options"].split(",")) == {"keep_alive", "num_ctx"}
    async with http.post(router.url + "/v1/chat/completions",
                         json={"model": DEFAULT_ALIAS, "max_tokens": 4,
                               "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status == 200 and "+translated" not in resp.headers["X-Routing-Reason"]
        assert "X-Unmapped-Options" not in resp.headers


async def test_openai_client_on_an_ollama_without_v1(sims, routers):
    old = await sims("old-ollama", ["llama3.2:1b", "nomic-embed-text"], openai_endpoints=False)
    router = await routers([backend_entry(old)])
    assert router.registry.states["old-ollama"].speaks_openai is False
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0) as client:
        done = await client.chat.completions.create(model="llama3.2:1b", max_tokens=5,
                                                    messages=[{"role": "user", "content": "hello"}])
        assert done.choices[0].message.content and done.choices[0].finish_reason == "length"
        assert done.usage.completion_tokens == 5
        stream = await client.chat.completions.create(model="llama3.2:1b", stream=True, max_tokens=6,
                                                      stream_options={"include_usage": True},
                                                      messages=[{"role": "user", "content": "hi"}])
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
        completion = await client.completions.create(model="llama3.2:1b", prompt="once", max_tokens=3)
        assert completion.choices[0].text
        embedded = await client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
        assert len(embedded.data) == 2
    assert all(path.startswith("/api/") for path in old.stats.paths)


async def test_translated_requests_respect_pause_and_pins(sims, routers, http):
    llama = await sims("llamacpp", ["qwen3:8b"], kind="openai")
    gpu = await sims("gpu", ["qwen3:8b"])
    router = await routers([backend_entry(llama, kind="openai", models=["qwen3*"]), backend_entry(gpu)])
    body = {"model": "qwen3:8b", "prompt": "x", "stream": False}
    async with http.post(router.url + "/api/generate", json=body) as resp:
        assert resp.headers["X-Backend-Used"] == "llamacpp"  # pinned there, reached through translation
    async with http.post(router.url + "/api/generate", json=body, headers={"X-Target-Backend": "gpu"}) as resp:
        assert resp.status == 409
    router.router.safety.pause(None, "maintenance")
    waiting = asyncio.create_task(http.post(router.url + "/api/generate", json=body))
    await wait_until(lambda: router.scheduler.queue_depth == 1)
    assert llama.stats.requests == 1
    router.router.safety.resume(None)
    resp = await waiting
    assert resp.status == 200 and json.loads(await resp.read())["done"] is True
    resp.release()
