"""Management API: loopback-only bind, Host/Origin checks, read and steer endpoints, /metrics, /explain."""

import asyncio
import json

import pytest
from conftest import backend_entry

from ollamaproxy.config import ConfigError
from ollamaproxy.management import (
    host_header_allowed,
    origin_allowed,
    runner_url,
    start_management,
)
from ollamaproxy.metrics import Metrics
from ollamaproxy.modes import MODE_IDS
from ollamaproxy.requestdb import RequestDb


@pytest.fixture
async def management(sims, routers):
    """Factory: a router with sims plus its management API on a free loopback port; yields (handle, url)."""
    runners = []

    async def start(*, models=("tiny:1b",), **kw):
        gpu = await sims("gpu0", list(models))
        cpu = await sims("cpu0", list(models))
        handle = await routers([backend_entry(gpu, hardware="nvidia"), backend_entry(cpu, hardware="cpu")])
        runner = await start_management(handle.router.control, "127.0.0.1:11437", port=0, **kw)
        runners.append(runner)
        return handle, runner_url(runner)

    yield start
    for runner in runners:
        await runner.cleanup()


async def get_json(http, url, **kw):
    async with http.get(url, **kw) as resp:
        return resp.status, await resp.json()


async def post_json(http, url, body=None, **kw):
    async with http.post(url, json=body, **kw) as resp:
        return resp.status, await resp.json()


# ---------------------------------------------------------------- binding


@pytest.mark.parametrize("listen", ["0.0.0.0:11437", "[::]:11437", "192.168.1.10:11437", "example.com:11437"])
async def test_non_loopback_listen_is_refused(routers, sims, listen):
    sim = await sims("s", ["m"])
    handle = await routers([backend_entry(sim)])
    with pytest.raises(ValueError, match="not loopback"):
        await start_management(handle.router.control, listen)


async def test_malformed_listen_is_refused(routers, sims):
    sim = await sims("s", ["m"])
    handle = await routers([backend_entry(sim)])
    with pytest.raises(ValueError, match="HOST:PORT"):
        await start_management(handle.router.control, "localhost")


# ---------------------------------------------------------------- Host and Origin


@pytest.mark.parametrize("host,ok", [
    ("127.0.0.1", True), ("127.0.0.1:11437", True), ("localhost", True), ("LOCALHOST:80", True),
    ("[::1]", True), ("[::1]:11437", True), ("127.0.0.2:1", True),
    ("evil.example", False), ("evil.example:11437", False), ("127.0.0.1.nip.io", False),
    ("localhost.evil.example", False), ("[::ffff:8.8.8.8]:1", False), ("0.0.0.0", False), ("", False),
    (None, False), ("::1", False), ("127.1", False), ("localhost:99999a", False),
])
def test_host_header_rules(host, ok):
    assert host_header_allowed(host) is ok


@pytest.mark.parametrize("origin,ok", [
    ("http://localhost:3000", True), ("http://127.0.0.1:8080", True), ("https://[::1]", True),
    ("null", False), ("http://evil.example", False), ("http://localhost.evil.example", False),
    ("file://", False), ("http://127.0.0.1:bad", False),
])
def test_origin_rules(origin, ok):
    assert origin_allowed(origin) is ok


async def test_foreign_host_header_is_403_json(management, http):
    handle, url = await management()
    for host in ("evil.example:11437", "attacker.test"):
        status, body = await get_json(http, f"{url}/health", headers={"Host": host})
        assert status == 403 and body["code"] == "forbidden_host" and "DNS rebinding" in body["error"]
        status, body = await post_json(http, f"{url}/pause", {}, headers={"Host": host})
        assert status == 403 and body["code"] == "forbidden_host"
    assert handle.router.control.routing()["paused"] is False
    for host in ("localhost", "127.0.0.1:11437", "[::1]:11437"):
        status, _ = await get_json(http, f"{url}/health", headers={"Host": host})
        assert status == 200


async def test_request_without_host_header_is_refused(management):
    _, url = await management()
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 403", b"HTTP/1.1 403"))
    assert json.loads(body)["code"] == "forbidden_host"


async def test_foreign_origin_cannot_steer(management, http):
    handle, url = await management()
    for origin in ("http://evil.example", "null"):
        status, body = await post_json(http, f"{url}/efficiency", {"mode": "performance"},
                                       headers={"Origin": origin})
        assert status == 403 and body["code"] == "forbidden_origin"
        status, body = await post_json(http, f"{url}/pause", None, headers={"Origin": origin})
        assert status == 403
    assert handle.router.control.mode() == "balanced"
    assert handle.router.control.routing()["paused"] is False
    status, body = await post_json(http, f"{url}/efficiency", {"mode": "quiet"},
                                   headers={"Origin": "http://localhost:3000"})
    assert status == 200 and body["mode"] == "quiet"


# ---------------------------------------------------------------- reading


async def test_read_endpoints(management, http):
    handle, url = await management()
    async with http.post(f"{handle.url}/api/generate", json={"model": "tiny:1b", "prompt": "x", "stream": False}) as r:
        assert r.status == 200
        used = r.headers["X-Backend-Used"]
    status, health = await get_json(http, f"{url}/health")
    assert status == 200 and health["status"] == "ok"
    assert health["backends"] == 2 and health["healthy_backends"] == 2
    assert health["total_requests"] == 1 and health["queue_depth"] == 0 and health["in_flight"] == 0
    status, body = await get_json(http, f"{url}/backends")
    assert [b["id"] for b in body["backends"]] == ["gpu0", "cpu0"]
    assert body["backends"][0]["hardware"] == "nvidia" and body["backends"][0]["models"] == ["tiny:1b"]
    status, one = await get_json(http, f"{url}/backends/cpu0")
    assert status == 200 and one["id"] == "cpu0"
    status, thermal = await get_json(http, f"{url}/thermal")
    assert thermal == {"devices": [], "hottest": {"device": "", "temperature_celsius": -1.0}}
    status, efficiency = await get_json(http, f"{url}/efficiency")
    assert efficiency["mode"] == "balanced" and efficiency["effective"] == "balanced"
    assert [m["id"] for m in efficiency["modes"]] == list(MODE_IDS)
    assert efficiency["holds"] == [] and isinstance(efficiency["degraded"], str) and efficiency["reason"]
    status, queue = await get_json(http, f"{url}/queue")
    assert queue == {"queue_depth": 0, "in_flight": 0, "total_requests": 1, "paused": False}
    status, decisions = await get_json(http, f"{url}/decisions?limit=5")
    assert status == 200 and [d["backend"] for d in decisions["decisions"]] == [used]
    status, body = await get_json(http, f"{url}/decisions?limit=nope")
    assert status == 400 and body["code"] == "invalid_limit"
    status, system = await get_json(http, f"{url}/system")
    assert status == 200 and "on_battery" in system


async def test_unknown_path_and_method_are_json(management, http):
    _, url = await management()
    status, body = await get_json(http, f"{url}/nope")
    assert status == 404 and body["code"] == "not_found" and "error" in body
    status, body = await get_json(http, f"{url}/backends/ghost")
    assert status == 404 and body["code"] == "unknown_backend" and "gpu0" in body["error"]
    async with http.delete(f"{url}/efficiency") as resp:
        body = await resp.json()
        assert resp.status == 405 and body["code"] == "method_not_allowed"
        assert set(body["allowed"]) >= {"GET", "POST"}


# ---------------------------------------------------------------- steering


async def test_set_mode_and_invalid_mode(management, http):
    handle, url = await management()
    status, body = await post_json(http, f"{url}/efficiency", {"mode": "Ultra Efficiency"})
    assert status == 200 and body["mode"] == "ultra-efficiency"
    assert handle.router.control.mode() == "ultra-efficiency"
    status, body = await post_json(http, f"{url}/efficiency", {"mode": "turbo"})
    assert status == 400 and body["code"] == "invalid_mode"
    assert all(mode in body["error"] for mode in MODE_IDS) and body["details"]["modes"] == list(MODE_IDS)
    status, body = await post_json(http, f"{url}/efficiency", {})
    assert status == 400 and body["code"] == "invalid_mode"
    async with http.post(f"{url}/efficiency", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_json"
    assert handle.router.control.mode() == "ultra-efficiency"


async def test_pause_and_resume(management, http):
    handle, url = await management()
    control = handle.router.control
    status, body = await post_json(http, f"{url}/pause")
    assert status == 200 and body["routing"]["paused"] is True and control.routing()["paused"]
    status, body = await post_json(http, f"{url}/resume")
    assert status == 200 and body["routing"]["paused"] is False
    status, body = await post_json(http, f"{url}/pause", {"backend": "gpu0", "reason": "gaming"})
    assert status == 200 and body["backend"]["breaker"] == "paused" and body["backend"]["breaker_reason"] == "gaming"
    assert control.routing()["paused"] is False
    status, body = await post_json(http, f"{url}/resume", {"backend": "gpu0"})
    assert status == 200 and body["backend"]["breaker"] == ""
    status, body = await post_json(http, f"{url}/pause", {"backend": "ghost"})
    assert status == 404 and body["code"] == "unknown_backend"


async def test_enable_and_disable_backend(management, http):
    handle, url = await management()
    status, body = await post_json(http, f"{url}/backends/gpu0/disable")
    assert status == 200 and body["enabled"] is False and body["health"] == "disabled"
    async with http.post(f"{handle.url}/api/generate", json={"model": "tiny:1b", "prompt": "x", "stream": False}) as r:
        assert r.headers["X-Backend-Used"] == "cpu0"
    status, body = await post_json(http, f"{url}/backends/gpu0/enable")
    assert status == 200 and body["enabled"] is True
    status, body = await post_json(http, f"{url}/backends/ghost/disable")
    assert status == 404 and body["code"] == "unknown_backend"


async def test_reload_without_hook_is_501(management, http):
    _, url = await management()
    status, body = await post_json(http, f"{url}/reload")
    assert status == 501 and body["code"] == "reload_unavailable"


async def test_reload_calls_the_hook_and_reports_config_errors(management, http):
    calls = []

    async def reload():
        calls.append(1)
        if len(calls) == 2:
            raise ConfigError("/x/config.toml", ["queue.max_depth = -1: must be >= 0"])
        return {"backends": 2}

    _, url = await management(reload=reload)
    status, body = await post_json(http, f"{url}/reload")
    assert status == 200 and body == {"reloaded": True, "result": {"backends": 2}}
    status, body = await post_json(http, f"{url}/reload")
    assert status == 400 and body["code"] == "invalid_config"
    assert body["details"]["problems"] == ["queue.max_depth = -1: must be >= 0"] and "kept" in body["error"]


async def test_explain_is_side_effect_free(management, http):
    handle, url = await management()
    control = handle.router.control
    before = (control.routing(), control.recent_decisions(50), [b["in_flight"] for b in control.backends()])
    status, body = await get_json(http, f"{url}/explain?model=tiny:1b&priority=high")
    assert status == 200 and body["backend"] in ("gpu0", "cpu0") and body["decision"] == "start"
    status, body = await get_json(http, f"{url}/explain?model=unknown-model")
    assert status == 200 and body["decision"] == "reject" and body["backend"] is None
    status, body = await get_json(http, f"{url}/explain?model=tiny:1b&priority=urgent-ish")
    assert status == 400 and body["code"] == "invalid_priority"
    status, body = await get_json(http, f"{url}/explain")
    assert status == 400 and body["code"] == "missing_model"
    after = (control.routing(), control.recent_decisions(50), [b["in_flight"] for b in control.backends()])
    assert after == before


# ---------------------------------------------------------------- /metrics and /stats


async def test_metrics_endpoint_parses(management, http):
    parser = pytest.importorskip("prometheus_client.parser")
    metrics = Metrics()
    handle, url = await management(metrics=metrics)
    for _ in range(3):
        async with http.post(f"{handle.url}/api/generate",
                             json={"model": "tiny:1b", "prompt": "x", "stream": False}) as r:
            assert r.status == 200
    async with http.post(f"{handle.url}/api/generate", json={"model": "ghost", "prompt": "x"}) as r:
        assert r.status == 404
    for line in handle.log_lines():
        metrics.observe(line)
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    found = {f.name: f for f in parser.text_string_to_metric_families(text)}
    totals = {(s.labels["model"], s.labels["status"]): s.value
              for s in found["ollamaproxy_requests"].samples if s.name == "ollamaproxy_requests_total"}
    assert sum(v for (model, status), v in totals.items() if status == "200") == 3
    assert totals[("ghost:latest", "404")] == 1  # the canonical model name
    assert found["ollamaproxy_request_duration_seconds"].type == "histogram"
    assert found["ollamaproxy_mode"].samples[0].labels == {"mode": "balanced"}
    for name in ("ollamaproxy_queue_depth", "ollamaproxy_in_flight", "ollamaproxy_backend_breaker_open",
                 "ollamaproxy_device_temperature_celsius", "ollamaproxy_backend_power_watts"):
        assert name in found


async def test_stats_endpoint(management, http, tmp_path):
    db = RequestDb(tmp_path / "r.sqlite3", flush_interval=3600)
    await db.start()
    try:
        handle, url = await management(request_db=db)
        async with http.post(f"{handle.url}/api/generate", json={"model": "tiny:1b", "prompt": "x",
                                                                 "stream": False}) as r:
            assert r.status == 200
        for line in handle.log_lines():
            db.submit(line)
        status, body = await get_json(http, f"{url}/stats?since=1h")
        assert status == 200 and body["since_seconds"] == 3600
        assert [(row["model"], row["requests"]) for row in body["stats"]] == [("tiny:1b", 1)]
        status, body = await get_json(http, f"{url}/stats?since=soon")
        assert status == 400 and body["code"] == "invalid_since"
    finally:
        await db.stop()


async def test_stats_without_db_is_501(management, http):
    _, url = await management()
    status, body = await get_json(http, f"{url}/stats")
    assert status == 501 and body["code"] == "request_db_unavailable"
