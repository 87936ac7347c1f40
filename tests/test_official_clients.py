"""The official `ollama` and `openai` client libraries, unchanged, pointed at the router."""

import ollama
import openai
import pytest

from conftest import backend_entry

MODELS = ["llama3.2:1b", "nomic-embed-text"]


@pytest.fixture
async def router(sims, routers):
    gpu = await sims("gpu", MODELS)
    cpu = await sims("cpu", ["llama3.2:1b", "qwen3:0.6b"])
    return await routers([backend_entry(gpu), backend_entry(cpu)])


async def test_ollama_chat_and_generate_stream_and_not(router):
    client = ollama.AsyncClient(host=router.url)
    reply = await client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hello"}],
                              options={"num_predict": 5})
    assert reply.done and reply.done_reason == "length" and reply.message.content.strip()
    chunks = [c async for c in await client.chat(model="llama3.2:1b", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}])]
    assert len(chunks) > 2 and chunks[-1].done and not chunks[0].done
    assert "".join(c.message.content for c in chunks).strip()
    generated = await client.generate(model="qwen3:0.6b", prompt="why is the sky blue?")
    assert generated.done and generated.response.strip() and generated.eval_count > 0
    parts = [p async for p in await client.generate(model="qwen3:0.6b", prompt="x", stream=True)]
    assert parts[-1].done and parts[-1].total_duration > 0


async def test_ollama_embed_list_ps_show(router):
    client = ollama.AsyncClient(host=router.url)
    embedded = await client.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) > 0
    legacy = await client.embeddings(model="nomic-embed-text", prompt="a")
    assert len(legacy.embedding) > 0
    listed = await client.list()
    names = sorted(m.model for m in listed.models)
    assert names == ["llama3.2:1b", "nomic-embed-text:latest", "qwen3:0.6b"]  # deduplicated across backends
    running = await client.ps()
    assert {m.model for m in running.models} >= {"llama3.2:1b"}
    shown = await client.show("qwen3:0.6b")
    assert shown.details is not None


async def test_ollama_client_sees_clear_errors(router):
    client = ollama.AsyncClient(host=router.url)
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat(model="nope:1b", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404 and "available models" in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        await client.pull("llama3.2:1b")
    assert caught.value.status_code == 403


async def test_openai_chat_completions_stream_and_not(router):
    client = openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="unused")
    done = await client.chat.completions.create(model="llama3.2:1b", max_tokens=4,
                                                messages=[{"role": "user", "content": "hello"}])
    assert done.choices[0].message.content and done.choices[0].finish_reason == "length"
    stream = await client.chat.completions.create(model="llama3.2:1b", stream=True,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "hi"}])
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage is not None
    completion = await client.completions.create(model="qwen3:0.6b", prompt="once upon", max_tokens=3)
    assert completion.choices[0].text


async def test_openai_embeddings_and_models(router):
    client = openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="unused")
    embedded = await client.embeddings.create(model="nomic-embed-text", input="hello")
    assert len(embedded.data[0].embedding) > 0
    models = await client.models.list()
    ids = sorted(m.id for m in models.data)
    assert ids == sorted(set(ids)) and "qwen3:0.6b" in ids and "llama3.2:1b" in ids
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "model_not_found"
