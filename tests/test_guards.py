"""Guarding the door over real HTTP: bad input, blocked endpoints, affinity, sizes; errors in each API's shape."""

import json

import pytest

from conftest import backend_entry

BYPASS_SPELLINGS = ["/api/pull", "//api//pull/", "/API/Pull", "/api/%70ull", "/api/./pull", "/api/x/../pull",
                    "/api%2Fpull", "/api/%2570ull", "/api/push", "/api/delete", "/api/copy", "/api/create",
                    "/api/blobs/sha256:0", "/Api/Blobs/sha256:0"]


@pytest.fixture
async def router(sims, routers):
    gpu = await sims("gpu", ["qwen3:8b", "llama3.2:1b"])
    cpu = await sims("cpu", ["qwen3:8b", "llama3.2:1b"])
    return await routers([backend_entry(gpu, models=["qwen3*"]), backend_entry(cpu)],
                         server={"max_body_bytes": 4096})


async def _post(http, url, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.post(url, data=data, headers=headers or {}) as resp:
        return resp.status, await resp.json(), resp.headers


@pytest.mark.parametrize("path", BYPASS_SPELLINGS)
@pytest.mark.parametrize("method", ["POST", "GET", "DELETE", "HEAD", "PUT"])
async def test_admin_endpoints_blocked_for_every_method_and_spelling(router, http, path, method):
    async with http.request(method, router.url + path, data=b'{"model":"llama3.2:1b"}', skip_auto_headers=()) as resp:
        assert resp.status == 403
        if method != "HEAD":
            body = await resp.json()
            assert body["code"] == "endpoint_blocked" and "blocked" in body["error"]


@pytest.mark.parametrize("body, code", [
    ({"messages": []}, "missing_model"),
    ({"model": ""}, "missing_model"),
    ({"model": "   \t"}, "missing_model"),
    ({"model": 42}, "invalid_model"),
    ({"model": None}, "missing_model"),
    ({"model": ["a"]}, "invalid_model"),
    (b"{not json", "invalid_json"),
    (b"[1, 2]", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
])
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/v1/chat/completions",
                                  "/v1/embeddings"])
async def test_bad_bodies_fail_closed_with_api_shaped_400(router, http, body, code, path, sims):
    status, payload, _ = await _post(http, router.url + path, body)
    assert status == 400
    if path.startswith("/v1/"):
        assert payload["error"]["code"] == code and payload["error"]["type"] == "invalid_request_error"
        assert payload["error"]["message"]
    else:
        assert payload["code"] == code and isinstance(payload["error"], str)


async def test_model_names_are_trimmed_for_routing(router, http):
    status, payload, headers = await _post(http, router.url + "/api/chat",
                                           {"model": "  llama3.2:1b ", "stream": False, "messages": []})
    assert status == 200 and payload["done"] is True


async def test_unknown_model_404_lists_available(router, http):
    status, payload, _ = await _post(http, router.url + "/api/chat", {"model": "mistral"})
    assert status == 404 and payload["code"] == "model_not_found"
    assert "llama3.2:1b" in payload["error"] and "qwen3:8b" in payload["error"]
    status, payload, _ = await _post(http, router.url + "/v1/chat/completions", {"model": "mistral"})
    assert status == 404 and payload["error"]["type"] == "not_found_error"


async def test_affinity_pin_holds_and_target_violation_is_409(router, http, sims):
    status, _, headers = await _post(http, router.url + "/api/chat", {"model": "qwen3:8b", "stream": False})
    assert status == 200 and headers["X-Backend-Used"] == "gpu"
    status, payload, _ = await _post(http, router.url + "/api/chat", {"model": "qwen3:8b"},
                                     {"X-Target-Backend": "cpu"})
    assert status == 409 and payload["code"] == "model_affinity_violation" and "gpu" in payload["error"]
    status, payload, _ = await _post(http, router.url + "/v1/chat/completions", {"model": "qwen3:8b"},
                                     {"X-Target-Backend": "cpu"})
    assert status == 409 and payload["error"]["code"] == "model_affinity_violation"


async def test_bad_target_header_is_400_naming_it(router, http):
    status, payload, _ = await _post(http, router.url + "/api/chat", {"model": "llama3.2:1b"},
                                     {"X-Target-Backend": "tpu9"})
    assert status == 400 and "X-Target-Backend" in payload["error"] and "gpu, cpu" in payload["error"]


async def test_body_over_limit_is_413(router, http):
    big = json.dumps({"model": "llama3.2:1b", "prompt": "x" * 10000})
    status, payload, _ = await _post(http, router.url + "/api/generate", big)
    assert status == 413 and payload["code"] == "body_too_large" and "4096" in payload["error"]


async def test_unknown_path_404_and_wrong_method_405(router, http):
    async with http.get(router.url + "/api/nothing") as resp:
        assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    async with http.get(router.url + "/v1/nothing") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    async with http.get(router.url + "/api/chat") as resp:
        assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_root_and_head_answer_like_ollama(router, http):
    async with http.get(router.url + "/") as resp:
        assert resp.status == 200 and await resp.text() == "Ollama is running"
    async with http.head(router.url + "/") as resp:
        assert resp.status == 200


async def test_version_and_aggregated_listings(router, http):
    async with http.get(router.url + "/api/version") as resp:
        assert (await resp.json())["version"] == "0.6.2"
    async with http.get(router.url + "/api/tags") as resp:
        models = (await resp.json())["models"]
    assert sorted(m["name"] for m in models) == ["llama3.2:1b", "qwen3:8b"]
    assert all({"name", "model", "modified_at", "size", "digest", "details"} <= set(m) for m in models)
    async with http.get(router.url + "/api/ps") as resp:
        running = (await resp.json())["models"]
    assert [m["name"] for m in running] == ["qwen3:8b"]  # loaded on both: listed once
    assert {"expires_at", "size_vram"} <= set(running[0])
    async with http.get(router.url + "/v1/models") as resp:
        listing = await resp.json()
    assert listing["object"] == "list" and sorted(m["id"] for m in listing["data"]) == ["llama3.2:1b", "qwen3:8b"]


async def test_listings_skip_unhealthy_backends(sims, routers, http):
    good = await sims("good", ["a:1b"])
    bad = await sims("bad", ["b:1b"])
    bad.behaviour.health_status = 401
    router = await routers([backend_entry(good), backend_entry(bad)])
    async with http.get(router.url + "/api/tags") as resp:
        assert [m["name"] for m in (await resp.json())["models"]] == ["a:1b"]


ADMIN_KEY = "correct-horse-battery-staple"


async def test_admin_pass_through_needs_the_configured_key(sims, routers, http):
    sim = await sims("ollama0", ["llama3.2:1b"])
    router = await routers([backend_entry(sim)], security={"admin_key": ADMIN_KEY})
    pull = json.dumps({"model": "llama3.2:1b"})
    async with http.post(router.url + "/api/pull", data=pull) as resp:
        assert resp.status == 403
    async with http.post(router.url + "//API/pull", data=pull,
                         headers={"X-Admin-Key": "wrong-key-wrong-key", "X-Target-Backend": "ollama0"}) as resp:
        assert resp.status == 403 and "does not match" in (await resp.json())["error"]
    async with http.post(router.url + "/api/pull", data=pull,
                         headers={"X-Admin-Key": ADMIN_KEY}) as resp:
        assert resp.status == 400 and "X-Target-Backend" in (await resp.json())["error"]
    async with http.post(router.url + "/api/%70ull", data=pull,
                         headers={"X-Admin-Key": ADMIN_KEY, "X-Target-Backend": "ollama0"}) as resp:
        # Reached the backend (the simulator has no /api/pull and says so itself).
        assert resp.headers.get("X-Sim-Backend") == "ollama0" and resp.headers["X-Backend-Used"] == "ollama0"
    assert router.log_lines() and ADMIN_KEY not in router.log_buffer.getvalue()


async def test_without_a_configured_key_admin_stays_blocked_for_everyone(router, http):
    async with http.post(router.url + "/api/pull", data=b"{}",
                         headers={"X-Admin-Key": ADMIN_KEY, "X-Target-Backend": "gpu"}) as resp:
        assert resp.status == 403


def test_admin_key_never_echoed_by_config_errors():
    from ollamaproxy.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config({"backends": [{"id": "a", "url": "http://x:1"}], "security": {"admin_key": "short-secret"}})
    assert "short-secret" not in str(caught.value) and "at least 16" in str(caught.value)
