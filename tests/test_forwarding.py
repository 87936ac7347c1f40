"""Forwarding: byte-for-byte bodies, unbuffered streams, failover rules, slots released on every path."""

import asyncio
import json

import aiohttp
import ollama
import pytest
from aiohttp import web

from conftest import backend_entry, wait_until

CHAT = "/api/chat"


def chat_body(model="m:1b", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    body.update(extra)
    return json.dumps(body)


async def test_body_reaches_backend_byte_for_byte(sims, routers, http):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    raw = ('{ "model" :"m:1b",\n "messages":[{"role":"user","content":"caf\\u00e9 \u2603"}],'
           ' "options":{"num_ctx":131072,"num_predict":2, "unknown_future_option": [1,2.50,null]},'
           ' "stream":false , "keep_alive":"10m"}').encode()
    async with http.post(router.url + CHAT, data=raw, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 200
        await resp.read()
    assert sim.stats.bodies[-1] == raw


async def test_response_bytes_are_untouched(sims, routers, http):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    async with aiohttp.ClientSession() as direct:
        async with direct.post(sim.url + CHAT, data=chat_body(stream=False)) as resp:
            direct_body = json.loads(await resp.read())
    async with http.post(router.url + CHAT, data=chat_body(stream=False)) as resp:
        proxied_body = json.loads(await resp.read())
    for key in ("created_at", "total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        direct_body.pop(key, None), proxied_body.pop(key, None)
    assert proxied_body == direct_body


def _gated_stream_app(content_type, first, second, gate: asyncio.Event, *, extra_chunk=b""):
    async def handler(request):
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        await resp.write(first)
        await gate.wait()
        if extra_chunk:
            await resp.write(extra_chunk)
        await resp.write(second)
        await resp.write_eof()
        return resp

    async def tags(request):
        return web.json_response({"models": [{"name": "m:1b", "model": "m:1b"}]})

    async def version(request):
        return web.json_response({"version": "0.6.2"})

    async def models(request):
        return web.json_response({"object": "list", "data": [{"id": "m:1b", "object": "model"}]})

    async def ps(request):
        return web.json_response({"models": []})

    app = web.Application()
    app.router.add_post("/api/chat", handler)
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_get("/api/version", version)
    app.router.add_get("/v1/models", models)
    return app


async def test_ndjson_chunks_pass_through_before_the_stream_ends(raw_backends, routers, http):
    gate = asyncio.Event()
    first = b'{"message":{"content":"a"},"done":false}\n'
    huge = b'{"message":{"content":"' + b"x" * (3 * 1024 * 1024) + b'"},"done":false}\n'  # no line cap
    last = b'{"done":true,"done_reason":"stop"}\n'
    url = await raw_backends(_gated_stream_app("application/x-ndjson", first, last, gate, extra_chunk=huge))
    router = await routers([backend_entry(url, "raw")])
    async with http.post(router.url + CHAT, data=chat_body()) as resp:
        assert resp.status == 200 and resp.headers["X-Backend-Used"] == "raw"
        # The backend is blocked on `gate`: the first line can only arrive if nothing buffers it.
        line = await asyncio.wait_for(resp.content.readline(), timeout=10)
        assert line == first
        gate.set()
        rest = await resp.read()
    assert rest == huge + last


async def test_sse_passes_through_unbuffered_with_accel_header(raw_backends, routers, http):
    gate = asyncio.Event()
    first = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
    last = b"data: [DONE]\n\n"
    url = await raw_backends(_gated_stream_app("text/event-stream", first, last, gate))
    router = await routers([backend_entry(url, "raw")])
    async with http.post(router.url + "/v1/chat/completions", data=chat_body(stream=True)) as resp:
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        got = b""
        while len(got) < len(first):
            got += await asyncio.wait_for(resp.content.readany(), timeout=10)
        assert got == first
        gate.set()
        assert await resp.read() == last


async def test_routing_headers_out(sims, routers, http):
    a = await sims("a", ["m:1b"], loaded=[])
    b = await sims("b", ["m:1b"], loaded=["m:1b"])
    router = await routers([backend_entry(a), backend_entry(b)])
    async with http.post(router.url + CHAT, data=chat_body(stream=False), headers={"X-Request-ID": "req-42"}) as resp:
        assert resp.headers["X-Request-ID"] == "req-42"
        assert resp.headers["X-Backend-Used"] == "b"  # the model is already loaded there
        assert resp.headers["X-Routing-Reason"] == "mode-balanced:latency-energy"
        assert float(resp.headers["X-Estimated-Latency-Ms"]) > 0 and float(resp.headers["X-Estimated-Power-W"]) > 0
        assert resp.headers["X-Alternatives"] == "a"
    async with http.post(router.url + CHAT, data=chat_body(stream=False),
                         headers={"X-Target-Backend": "a"}) as resp:
        assert resp.headers["X-Backend-Used"] == "a" and resp.headers["X-Routing-Reason"] == "target-header"
        assert len(resp.headers["X-Request-ID"]) == 32  # generated
    assert b.stats.requests == 1 and a.stats.requests == 1


@pytest.mark.parametrize("status", [503, 429])
async def test_failover_before_first_byte_on_busy_status(sims, routers, http, status):
    a = await sims("a", ["m:1b"], loaded=["m:1b"])
    b = await sims("b", ["m:1b"])
    a.behaviour.fail_status, a.behaviour.fail_count, a.behaviour.retry_after = status, 1, "30"
    router = await routers([backend_entry(a), backend_entry(b)])
    async with http.post(router.url + CHAT, data=chat_body()) as resp:
        assert resp.status == 200
        assert resp.headers["X-Backend-Used"] == "b"
        assert resp.headers["X-Routing-Reason"].startswith("failover-")
        await resp.read()
    assert a.stats.requests == 1 and b.stats.completed == 1
    assert router.registry.states["a"].health.value == "busy"  # and it stays out until Retry-After


async def test_failover_on_connection_error(sims, routers, http):
    a = await sims("a", ["m:1b"], loaded=["m:1b"])
    b = await sims("b", ["m:1b"])
    router = await routers([backend_entry(a), backend_entry(b)])
    await a.stop()  # registry still believes a is healthy
    async with http.post(router.url + CHAT, data=chat_body(stream=False)) as resp:
        assert resp.status == 200 and resp.headers["X-Backend-Used"] == "b"
    assert router.registry.states["a"].health.value == "down"


async def test_all_candidates_failing_gives_503_naming_each(sims, routers, http):
    a = await sims("a", ["m:1b"])
    b = await sims("b", ["m:1b"])
    a.behaviour.fail_status = b.behaviour.fail_status = 503
    router = await routers([backend_entry(a), backend_entry(b)])
    async with http.post(router.url + CHAT, data=chat_body()) as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["code"] == "all_backends_failed" and "a: HTTP 503" in body["error"] and "b: HTTP 503" in body["error"]


async def test_no_failover_after_first_byte_and_client_gets_clean_error(sims, routers):
    a = await sims("a", ["m:1b"], loaded=["m:1b"])
    b = await sims("b", ["m:1b"])
    a.behaviour.crash_after_chunks = 3
    router = await routers([backend_entry(a), backend_entry(b)])
    client = ollama.AsyncClient(host=router.url)
    received = []
    with pytest.raises(ollama.ResponseError) as caught:
        async for part in await client.chat(model="m:1b", stream=True, messages=[{"role": "user", "content": "x"}],
                                            options={"num_predict": 50}):
            received.append(part)
    assert len(received) == 3
    assert "failed mid-stream" in caught.value.error
    assert b.stats.requests == 0  # never retried elsewhere once bytes were sent
    await router.assert_no_leaks()
    assert router.log_lines()[-1]["outcome"] == "backend_failed_mid_stream"


async def test_openai_stream_crash_ends_with_error_event(sims, routers, http):
    a = await sims("a", ["m:1b"])
    a.behaviour.crash_after_chunks = 2
    router = await routers([backend_entry(a)])
    async with http.post(router.url + "/v1/chat/completions", data=chat_body(stream=True, max_tokens=40)) as resp:
        text = (await resp.read()).decode()
    events = [e for e in text.split("\n\n") if e]
    assert len(events) == 3 and '"backend_stream_failed"' in events[-1]


@pytest.mark.parametrize("cancel", [True, False])
async def test_client_disconnect_mid_stream(sims, routers, cancel):
    sim = await sims("a", ["m:1b"], tokens_per_second=200)
    router = await routers([backend_entry(sim, cancel_on_disconnect=cancel)])
    async with aiohttp.ClientSession() as session:
        resp = await session.post(router.url + CHAT, data=chat_body(options={"num_predict": 400}))
        await resp.content.readline()
        resp.close()  # the client goes away mid-stream
    if cancel:
        await wait_until(lambda: sim.stats.cancelled == 1, message="backend to see the cancellation")
        assert sim.stats.completed == 0
    else:
        # The upstream request runs to its end; its slot stays held until then.
        assert router.scheduler.in_flight["a"] == 1
        await wait_until(lambda: sim.stats.completed == 1, timeout=20, message="upstream to finish")
    await router.assert_no_leaks()


async def test_three_requests_one_slot_run_one_after_another(sims, routers, http):
    sim = await sims("a", ["m:1b"])
    sim.behaviour.hold = asyncio.Event()
    router = await routers([backend_entry(sim, max_concurrent=1)])
    finished = []

    async def one(i):
        async with http.post(router.url + CHAT, data=chat_body(stream=False), headers={"X-Request-ID": f"r{i}"}) as r:
            assert r.status == 200
            await r.read()
            finished.append(i)

    tasks = []
    for i in range(3):
        tasks.append(asyncio.create_task(one(i)))
        await wait_until(lambda: sim.stats.requests + router.scheduler.queue_depth == i + 1)
    assert sim.stats.active == 1 and router.scheduler.queue_depth == 2
    sim.behaviour.hold.set()
    await asyncio.gather(*tasks)
    assert sim.stats.max_active == 1 and finished == [0, 1, 2]
    queued = {line["request_id"]: line["queued_ms"] for line in router.log_lines()}
    assert queued["r0"] == 0 and queued["r1"] > 0 and queued["r2"] > 0


async def test_queue_full_and_queued_client_leaving(sims, routers, http):
    sim = await sims("a", ["m:1b"])
    sim.behaviour.hold = asyncio.Event()
    router = await routers([backend_entry(sim)], queue={"max_depth": 1})
    first = asyncio.create_task(http.post(router.url + CHAT, data=chat_body(stream=False)))
    await wait_until(lambda: sim.stats.active == 1)
    async with aiohttp.ClientSession() as other:
        queued = asyncio.create_task(other.post(router.url + CHAT, data=chat_body(stream=False)))
        await wait_until(lambda: router.scheduler.queue_depth == 1)
        async with http.post(router.url + CHAT, data=chat_body(stream=False)) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"]
            assert (await resp.json())["code"] == "queue_full"
        queued.cancel()
    # The queued client disconnected: its entry leaves the queue at once.
    await wait_until(lambda: router.scheduler.queue_depth == 0, message="queue entry to go")
    sim.behaviour.hold.set()
    resp = await first
    assert resp.status == 200
    resp.release()
    assert sim.stats.requests == 1


async def test_backend_down_while_others_serve_and_recovery_refreshes_inventory(sims, routers, http):
    a = await sims("a", ["m:1b"])
    router = await routers([backend_entry(a)], health={"interval_seconds": 0.05, "max_backoff_seconds": 0.05})
    port = a.port
    await a.stop()
    await wait_until(lambda: router.registry.states["a"].health.value == "down")
    async with http.post(router.url + CHAT, data=chat_body()) as resp:
        assert resp.status == 503
        assert "down" in (await resp.json())["error"]
    a2 = await sims("a", ["m:1b", "new:7b"], port=port)
    await wait_until(lambda: router.registry.states["a"].health.value == "healthy")
    await wait_until(lambda: "new:7b" in router.registry.states["a"].inventory.models)
    async with http.post(router.url + CHAT, data=chat_body("new:7b", stream=False)) as resp:
        assert resp.status == 200
    assert a2.stats.completed == 1


@pytest.mark.parametrize("status, health", [(401, "misconfigured"), (403, "misconfigured"), (503, "busy"),
                                            (500, "down")])
async def test_health_states_distinguished(sims, routers, http, status, health):
    a = await sims("a", ["m:1b"])
    a.behaviour.health_status = status
    router = await routers([backend_entry(a)])
    assert router.registry.states["a"].health.value == health
    async with http.post(router.url + CHAT, data=chat_body()) as resp:
        assert resp.status == 503
        assert health in (await resp.json())["error"]


async def test_request_log_line_has_fields_and_no_prompt(sims, routers, http):
    a = await sims("a", ["m:1b"])
    router = await routers([backend_entry(a)])
    secret = "my very private prompt text"
    body = json.dumps({"model": "m:1b", "messages": [{"role": "user", "content": secret}]})
    async with http.post(router.url + CHAT, data=body) as resp:
        await resp.read()
    line = router.log_lines()[-1]
    assert {"time", "request_id", "client", "method", "path", "model", "backend", "status", "queued_ms", "ttfb_ms",
            "total_ms", "bytes", "outcome"} <= set(line)
    assert line["backend"] == "a" and line["status"] == 200 and line["bytes"] > 0 and line["outcome"] == "ok"
    assert secret not in router.log_buffer.getvalue()


async def test_silent_stream_is_ended_by_the_idle_watchdog(raw_backends, routers, http):
    gate = asyncio.Event()  # never set: the backend goes silent after its first line
    first = b'{"message":{"content":"a"},"done":false}\n'
    url = await raw_backends(_gated_stream_app("application/x-ndjson", first, b"", gate))
    router = await routers([backend_entry(url, "raw")], server={"stream_idle_timeout_seconds": 0.2})
    async with http.post(router.url + CHAT, data=chat_body()) as resp:
        body = await asyncio.wait_for(resp.read(), timeout=10)
    lines = body.splitlines()
    assert lines[0] == first.strip() and "silent for 0.2s" in json.loads(lines[-1])["error"]
    assert router.registry.states["raw"].health.value == "down"
