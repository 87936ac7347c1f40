"""Smoke tests for the real llama.cpp backend (xllamacpp + SmolLM2-135M).

They prove the test backend itself works before the proxy is put in front of it:
one server for the whole session, a few tiny requests through the official openai client.
"""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from llamacpp_server import DEFAULT_ALIAS

pytestmark = pytest.mark.llamacpp

ALIAS = DEFAULT_ALIAS  # "smollm2:135m"


@pytest.fixture
def client(llamacpp_server):
    with openai.OpenAI(
        base_url=llamacpp_server.openai_base_url, api_key="none", timeout=30, max_retries=0
    ) as c:
        yield c


def test_models_lists_alias(llamacpp_server):
    with urllib.request.urlopen(llamacpp_server.url + "/v1/models", timeout=10) as resp:
        assert resp.status == 200
        body = json.load(resp)
    ids = [m["id"] for m in body["data"]]
    assert ALIAS in ids, body


def test_chat_completion(client):
    resp = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert resp.choices, resp
    text = resp.choices[0].message.content
    assert text and text.strip(), resp
    assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 8


def test_chat_completion_stream(client):
    stream = client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": "Count from one to ten."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    chunks = list(stream)  # returns only once the server ends the SSE stream ([DONE])
    assert len(chunks) >= 3, chunks
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip(), chunks
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish and finish[-1] in ("length", "stop"), chunks
