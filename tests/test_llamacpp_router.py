"""A real llama.cpp server (OpenAI-compatible) as an `openai`-kind backend behind the router."""

import aiohttp
import openai
import pytest

from conftest import backend_entry, wait_until
from llamacpp_server import DEFAULT_ALIAS

pytestmark = pytest.mark.llamacpp


@pytest.fixture
async def router(llamacpp_server, routers):
    return await routers([backend_entry(llamacpp_server.url, "llamacpp", kind="openai", max_concurrent=1)])


async def test_inventory_and_listing_come_from_the_real_server(router, http):
    assert DEFAULT_ALIAS in router.registry.states["llamacpp"].inventory.models
    async with http.get(router.url + "/v1/models") as resp:
        assert DEFAULT_ALIAS in [m["id"] for m in (await resp.json())["data"]]


async def test_streamed_chat_arrives_intact_through_the_router(router, llamacpp_server):
    messages = [{"role": "user", "content": "Count from one to five."}]
    async with openai.AsyncOpenAI(base_url=llamacpp_server.openai_base_url, api_key="x") as direct:
        reference = await direct.chat.completions.create(model=DEFAULT_ALIAS, messages=messages, max_tokens=16,
                                                         temperature=0, seed=1)
    async with openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(model=DEFAULT_ALIAS, messages=messages, max_tokens=16,
                                                      temperature=0, seed=1, stream=True)
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3
    assert text == reference.choices[0].message.content  # greedy decoding: the same text, nothing lost
    assert chunks[-1].choices[0].finish_reason in ("length", "stop") or chunks[-2].choices[0].finish_reason


async def test_client_disconnect_mid_stream_frees_the_slot(router, http):
    body = {"model": DEFAULT_ALIAS, "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}]}
    async with aiohttp.ClientSession() as session:
        resp = await session.post(router.url + "/v1/chat/completions", json=body)
        assert resp.status == 200 and resp.headers["X-Backend-Used"] == "llamacpp"
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        assert router.scheduler.in_flight["llamacpp"] == 1
        resp.close()
    await wait_until(router.idle, message="slot to be released after the disconnect")
    # The single slot is usable again at once.
    async with http.post(router.url + "/v1/chat/completions",
                         json={"model": DEFAULT_ALIAS, "max_tokens": 4,
                               "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] is not None
