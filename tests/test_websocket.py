"""WebSocket front door: concurrent streams, cancel, Origin check, and the same gates as HTTP (pause, pins)."""

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web
from conftest import backend_entry, wait_until

from ollamaproxy import service
from ollamaproxy.frontdoors.websocket import (
    DEFAULT_MAX_CONCURRENT,
    WS_PATH,
    WebSocketDoor,
    is_loopback_origin,
)
from ollamaproxy.sim import sim_text

RECEIVE_BOUND = 10  # a hang fails the test instead of blocking it; never used to order events


@pytest.fixture
def ws_wired(monkeypatch):
    """Routers made after this have the WebSocket route on their own app (unless app.py wires it already)."""
    original = service.create_proxy_app

    def wired(state):
        app = original(state)
        if not any(resource.canonical == WS_PATH for resource in app.router.resources()):
            WebSocketDoor().install(app)
        return app

    monkeypatch.setattr(service, "create_proxy_app", wired)


async def receive(ws) -> dict:
    message = await asyncio.wait_for(ws.receive(), RECEIVE_BOUND)
    assert message.type is aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def until_done(ws, *request_ids) -> dict[str, list[dict]]:
    """Chunks per request id until each named request has its done chunk."""
    chunks: dict[str, list[dict]] = {rid: [] for rid in request_ids}
    open_ids = set(request_ids)
    while open_ids:
        chunk = await receive(ws)
        chunks.setdefault(chunk["request_id"], []).append(chunk)
        if chunk["done"]:
            open_ids.discard(chunk["request_id"])
    return chunks


def _scripted_backend(feeds: dict[str, asyncio.Queue]):
    """An Ollama backend whose /api/generate streams what the test puts in feeds[prompt] (None ends it)."""

    async def generate(request):
        body = await request.json()
        feed = feeds.setdefault(body["prompt"], asyncio.Queue())
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        sent = 0
        while (token := await feed.get()) is not None:
            await resp.write(json.dumps({"model": body["model"], "response": token, "done": False}).encode() + b"\n")
            sent += 1
        await resp.write(json.dumps({"model": body["model"], "response": "", "done": True, "done_reason": "stop",
                                     "eval_count": sent, "eval_duration": 1_000_000,
                                     "prompt_eval_count": 1}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def tags(request):
        return web.json_response({"models": [{"name": "m:1b", "model": "m:1b"}]})

    async def ps(request):
        return web.json_response({"models": []})

    async def version(request):
        return web.json_response({"version": "0.6.2"})

    app = web.Application()
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_get("/api/version", version)
    return app


async def test_two_requests_interleave_on_one_socket(ws_wired, raw_backends, routers, http):
    feeds = {"a": asyncio.Queue(), "b": asyncio.Queue()}
    url = await raw_backends(_scripted_backend(feeds))
    router = await routers([backend_entry(url, "scripted", max_concurrent=2)])
    async with http.ws_connect(router.url + WS_PATH) as ws:
        await ws.send_json({"request_id": "A", "model": "m:1b", "prompt": "a", "priority": "high"})
        await ws.send_json({"request_id": "B", "model": "m:1b", "prompt": "b", "max_latency_ms": 60000})
        await wait_until(lambda: router.scheduler.in_flight["scripted"] == 2, message="both requests to start")
        order = []
        for rid, token in (("A", "a1 "), ("B", "b1 "), ("A", "a2 "), ("B", "b2 ")):
            feeds[rid.lower()].put_nowait(token)
            chunk = await receive(ws)  # each stream is blocked on its feed: this chunk can only be this one
            assert chunk["request_id"] == rid and chunk["token"] == token and chunk["done"] is False
            order.append(rid)
        assert order == ["A", "B", "A", "B"]
        feeds["b"].put_nowait(None)
        final_b = await receive(ws)
        assert final_b["request_id"] == "B" and final_b["done"] is True and final_b["error"] is None
        feeds["a"].put_nowait("a3 ")
        feeds["a"].put_nowait(None)
        chunks = await until_done(ws, "A")
    final_a = chunks["A"][-1]
    assert [c["token"] for c in chunks["A"][:-1]] == ["a3 "]
    assert final_a["token_count"] == 3 and final_b["token_count"] == 2
    assert final_a["backend"] == "scripted" and final_a["routing_reason"]
    for final in (final_a, final_b):
        assert final["ttft_ms"] >= 0 and final["total_time_ms"] >= final["ttft_ms"] and final["tokens_per_sec"] > 0
    logged = {line["request_id"]: line for line in router.log_lines()}
    assert logged["A"]["priority"] == "high" and logged["B"]["path"] == "/api/generate"  # the HTTP gate saw them


async def test_cancel_by_id_frees_the_slot_and_keeps_the_socket(ws_wired, sims, routers, http):
    sim = await sims("a", ["m:1b"])
    sim.behaviour.hold = asyncio.Event()
    router = await routers([backend_entry(sim)])
    async with http.ws_connect(router.url + WS_PATH) as ws:
        await ws.send_json({"request_id": "r1", "model": "m:1b", "prompt": "hello"})
        await wait_until(lambda: sim.stats.active == 1, message="the request to reach the backend")
        await ws.send_json({"cancel": "r1"})
        chunk = await receive(ws)
        assert chunk == {**chunk, "request_id": "r1", "done": True, "error": "cancelled"}
        await wait_until(lambda: sim.stats.cancelled == 1, message="the backend to see the cancellation")
        await router.assert_no_leaks()
        await ws.send_json({"cancel": "r1"})  # no longer in flight
        chunk = await receive(ws)
        assert chunk["request_id"] is None and chunk["code"] == "unknown_request" and "r1" in chunk["error"]
        sim.behaviour.hold.set()
        await ws.send_json({"request_id": "r2", "model": "m:1b", "prompt": "again",
                            "options": {"num_predict": 4}})
        chunks = await until_done(ws, "r2")
    assert "".join(c["token"] for c in chunks["r2"]) == sim_text(4)
    assert chunks["r2"][-1]["token_count"] == 4 and chunks["r2"][-1]["error"] is None


async def test_cancel_while_queued_drops_the_queue_entry(ws_wired, sims, routers, http):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    router.router.safety.pause(None, "maintenance")
    async with http.ws_connect(router.url + WS_PATH) as ws:
        await ws.send_json({"request_id": "q", "model": "m:1b", "prompt": "x"})
        await wait_until(lambda: router.scheduler.queue_depth == 1, message="the request to queue")
        await ws.send_json({"cancel": "q"})
        chunk = await receive(ws)
        assert chunk["request_id"] == "q" and chunk["error"] == "cancelled"
        await wait_until(lambda: router.scheduler.queue_depth == 0, message="the queue entry to go")
    router.router.safety.resume(None)
    assert sim.stats.requests == 0


async def test_paused_router_holds_a_ws_request_until_resume(ws_wired, sims, routers, http):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    router.router.safety.pause(None, "maintenance")
    async with http.ws_connect(router.url + WS_PATH) as ws:
        await ws.send_json({"request_id": "p", "model": "m:1b", "options": {"num_predict": 3},
                            "messages": [{"role": "user", "content": "hi"}]})
        await wait_until(lambda: router.scheduler.queue_depth == 1, message="the request to wait in the queue")
        assert sim.stats.requests == 0
        router.router.safety.resume(None)
        chunks = await until_done(ws, "p")
    assert "".join(c["token"] for c in chunks["p"]) == sim_text(3)
    assert chunks["p"][-1]["token_count"] == 3 and sim.stats.paths == ["/api/chat"]


async def test_pinned_model_with_conflicting_target_is_a_409_chunk(ws_wired, sims, routers, http):
    gpu = await sims("gpu", ["qwen3:8b"])
    cpu = await sims("cpu", ["qwen3:8b"])
    router = await routers([backend_entry(gpu, models=["qwen3*"]), backend_entry(cpu)])
    async with http.ws_connect(router.url + WS_PATH) as ws:
        await ws.send_json({"request_id": "pin", "model": "qwen3:8b", "prompt": "x", "target_backend": "cpu"})
        chunk = await receive(ws)
        assert chunk["request_id"] == "pin" and chunk["done"] is True and chunk["status"] == 409
        assert chunk["code"] == "model_affinity_violation" and "gpu" in chunk["error"]
        await ws.send_json({"request_id": "ok", "model": "qwen3:8b", "prompt": "x", "options": {"num_predict": 1}})
        chunks = await until_done(ws, "ok")
    assert chunks["ok"][-1]["backend"] == "gpu" and cpu.stats.requests == 0


async def test_bad_messages_get_error_chunks_and_the_socket_stays(ws_wired, sims, routers, http):
    sim = await sims("a", ["m:1b"])
    sim.behaviour.hold = asyncio.Event()
    router = await routers([backend_entry(sim)])
    cases = [
        ("not json", None, "invalid_json"),
        ("[1, 2]", None, "invalid_message"),
        ('{"request_id": "m1", "prompt": "x"}', "m1", "missing_model"),
        ('{"request_id": "m2", "model": 7, "prompt": "x"}', "m2", "invalid_model"),
        ('{"request_id": "m3", "model": "m:1b"}', "m3", "missing_input"),
        ('{"request_id": "m4", "model": "m:1b", "prompt": "x", "messages": []}', "m4", "invalid_message"),
        ('{"request_id": "m5", "model": "m:1b", "prompt": "x", "priority": "urgent"}', "m5", "invalid_field"),
        ('{"request_id": "m6", "model": "m:1b", "prompt": "x", "max_latency_ms": -5}', "m6", "invalid_field"),
        ('{"request_id": "m7", "model": "m:1b", "prompt": "x", "latency_critical": "yes"}', "m7", "invalid_field"),
        ('{"request_id": "m8", "model": "m:1b", "prompt": "x", "max_latency": 5}', "m8", "unknown_field"),
        ('{"request_id": "m9", "model": "m:1b", "prompt": "x", "options": [1]}', "m9", "invalid_field"),
        ('{"request_id": "", "model": "m:1b", "prompt": "x"}', None, "invalid_field"),
        ('{"cancel": 5}', None, "unknown_request"),
        ('{"request_id": "m10", "model": "m:1b", "prompt": "x", "target_backend": "tpu9"}', "m10", "invalid_header"),
    ]
    async with http.ws_connect(router.url + WS_PATH) as ws:
        for text, rid, code in cases:
            await ws.send_str(text)
            chunk = await receive(ws)
            assert (chunk["request_id"], chunk["code"], chunk["done"]) == (rid, code, True), (text, chunk)
            assert chunk["error"]
        assert "priority" in (await _error_for(ws, '{"model": "m:1b", "prompt": "x", "priority": 9}'))
        assert "X-Target-Backend" in (await _error_for(
            ws, '{"model": "m:1b", "prompt": "x", "target_backend": "tpu9"}'))  # the router's own gate
        await ws.send_bytes(b"\x00")
        chunk = await receive(ws)
        assert chunk["code"] == "invalid_message" and "binary" in chunk["error"]
        await ws.send_json({"request_id": "dup", "model": "m:1b", "prompt": "x", "options": {"num_predict": 2}})
        await wait_until(lambda: sim.stats.active == 1)
        await ws.send_json({"request_id": "dup", "model": "m:1b", "prompt": "y"})
        chunk = await receive(ws)
        assert chunk["request_id"] is None and chunk["code"] == "duplicate_request_id" and "dup" in chunk["error"]
        sim.behaviour.hold.set()
        chunks = await until_done(ws, "dup")
    assert chunks["dup"][-1]["error"] is None and chunks["dup"][-1]["token_count"] == 2
    assert sim.stats.requests == 1


async def _error_for(ws, text: str) -> str:
    await ws.send_str(text)
    chunk = await receive(ws)
    assert chunk["done"] is True and chunk["error"]
    return chunk["error"]


async def test_limit_per_connection_and_disconnect_cancels_everything(ws_wired, sims, routers, http):
    sim = await sims("a", ["m:1b"])
    sim.behaviour.hold = asyncio.Event()
    router = await routers([backend_entry(sim, max_concurrent=2)])
    ws = await http.ws_connect(router.url + WS_PATH)
    for i in range(DEFAULT_MAX_CONCURRENT):
        await ws.send_json({"request_id": f"r{i}", "model": "m:1b", "prompt": "x"})
    await wait_until(lambda: sim.stats.active == 2 and router.scheduler.queue_depth == DEFAULT_MAX_CONCURRENT - 2,
                     message="two requests running and the rest queued")
    await ws.send_json({"request_id": "one-too-many", "model": "m:1b", "prompt": "x"})
    chunk = await receive(ws)
    assert chunk["request_id"] == "one-too-many" and chunk["code"] == "too_many_requests"
    assert str(DEFAULT_MAX_CONCURRENT) in chunk["error"]
    await ws.close()
    await wait_until(lambda: sim.stats.cancelled == 2, message="the backend to see both cancellations")
    await router.assert_no_leaks()
    assert sim.stats.completed == 0


async def test_foreign_origin_is_refused_and_loopback_origins_connect(ws_wired, sims, routers, http):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    for origin in ("http://evil.example", "http://localhost.evil.example", "null", "http://127.0.0.1.nip.io"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(router.url + WS_PATH, origin=origin)
        assert refused.value.status == 403
    async with http.get(router.url + WS_PATH, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403 and (await resp.json())["code"] == "forbidden_origin"
    port = router.url.rsplit(":", 1)[1]
    for origin in (None, "http://localhost:3000", f"http://127.0.0.1:{port}", "http://[::1]:8080"):
        async with http.ws_connect(router.url + WS_PATH, origin=origin) as ws:
            await ws.send_json({"model": "m:1b", "prompt": "x", "options": {"num_predict": 1}})
            chunk = await receive(ws)
            assert chunk["request_id"] and chunk["error"] is None
    async with http.get(router.url + WS_PATH) as resp:  # a plain GET is told to upgrade
        assert resp.status == 426 and (await resp.json())["code"] == "websocket_required"


@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost", True), ("http://localhost:8080", True), ("https://127.0.0.1:1", True),
    ("http://127.0.0.2", True), ("http://[::1]", True), ("http://LOCALHOST:1", True),
    ("http://example.com", False), ("http://localhost.example.com", False), ("null", False), ("", False),
    ("file://", False), ("http://127.0.0.1/path", False), ("http://user@localhost", False),
    ("ws://localhost", False),
])
def test_loopback_origin_rule(origin, allowed):
    assert is_loopback_origin(origin) is allowed
