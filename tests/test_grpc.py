"""gRPC front door: every RPC with a real grpc.aio client, going through the same gates as HTTP."""

import asyncio

import pytest

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_reflection")

from conftest import backend_entry, wait_until
from google.protobuf import struct_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from ollamaproxy.frontdoors._proto import ollamaproxy_pb2 as pb
from ollamaproxy.frontdoors._proto import ollamaproxy_pb2_grpc as pb_grpc
from ollamaproxy.frontdoors.grpc_server import SERVICE_NAME, grpc_status_for, start_grpc
from ollamaproxy.sim import sim_embedding, sim_text

BOUND = 10  # a hang fails the test instead of blocking it; never used to order events


@pytest.fixture
async def grpc_door(routers):
    """Factory: `stub, router = await grpc_door(router)` serves gRPC for a router from `routers`."""
    opened = []

    async def start(router):
        server = await start_grpc(router.router, "127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        opened.append((server, channel))
        return pb_grpc.InferenceRouterStub(channel), channel

    yield start
    for server, channel in opened:
        await channel.close()
        await server.stop(0)


def options(**values) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def error_code(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("ollamaproxy-error-code", "")


async def test_unary_generate_and_chat(sims, routers, grpc_door):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    stub, _ = await grpc_door(router)
    reply = await stub.Generate(pb.GenerateRequest(
        model="m:1b", prompt="hello", options=options(num_predict=5),
        routing=pb.Routing(request_id="g-1", priority=pb.PRIORITY_HIGH, max_latency_ms=60000)), timeout=BOUND)
    assert reply.text == sim_text(5) and reply.done and reply.done_reason == "length"
    assert reply.backend == "a" and reply.routing_reason and reply.request_id == "g-1"
    assert reply.stats.token_count == 5 and reply.stats.total_time_ms >= reply.stats.ttft_ms >= 0
    chat = await stub.Generate(pb.GenerateRequest(
        model="m:1b", messages=[pb.ChatMessage(role="user", content="hi")], options=options(num_predict=2)),
        timeout=BOUND)
    assert chat.text == sim_text(2) and chat.request_id
    assert sim.stats.paths == ["/api/generate", "/api/chat"]
    logged = {line["request_id"]: line for line in router.log_lines()}
    assert logged["g-1"]["priority"] == "high" and logged["g-1"]["status"] == 200  # the HTTP gate saw it


async def test_generate_stream(sims, routers, grpc_door):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    stub, _ = await grpc_door(router)
    chunks = [c async for c in stub.GenerateStream(pb.GenerateRequest(
        model="m:1b", prompt="count", options=options(num_predict=4)), timeout=BOUND)]
    assert len(chunks) == 5 and [c.done for c in chunks] == [False] * 4 + [True]
    assert "".join(c.token for c in chunks) == sim_text(4)
    assert chunks[-1].stats.token_count == 4 and chunks[-1].done_reason == "length"
    assert {c.backend for c in chunks} == {"a"} and len({c.request_id for c in chunks}) == 1


async def test_embed(sims, routers, grpc_door):
    sim = await sims("a", ["nomic-embed-text"])
    router = await routers([backend_entry(sim)])
    stub, _ = await grpc_door(router)
    reply = await stub.Embed(pb.EmbedRequest(model="nomic-embed-text", input=["a", "b"]), timeout=BOUND)
    assert reply.backend == "a" and len(reply.embeddings) == 2
    for vector, text in zip(reply.embeddings, ["a", "b"]):
        assert list(vector.values) == pytest.approx(sim_embedding(text, "nomic-embed-text"), abs=1e-6)
    assert sim.stats.paths == ["/api/embed"]


async def test_list_backends_and_health_check(sims, routers, grpc_door):
    gpu = await sims("gpu", ["qwen3:8b"])
    cpu = await sims("cpu", ["llama3.2:1b"])
    router = await routers([backend_entry(gpu, models=["qwen3*"], hardware="nvidia", max_concurrent=2),
                            backend_entry(cpu)])
    stub, _ = await grpc_door(router)
    listed = await stub.ListBackends(pb.ListBackendsRequest(), timeout=BOUND)
    by_id = {b.id: b for b in listed.backends}
    assert list(by_id) == ["gpu", "cpu"]
    assert by_id["gpu"].pinned_models == ["qwen3*"] and by_id["gpu"].hardware == "nvidia"
    assert by_id["gpu"].capacity == 2 and by_id["gpu"].health == "healthy" and by_id["gpu"].enabled
    assert "llama3.2:1b" in by_id["cpu"].models
    health = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=BOUND)
    assert health.status == pb.HealthCheckReply.SERVING and health.available_backends == 2
    assert health.total_backends == 2 and health.version and health.efficiency_mode
    router.router.safety.pause(None, "maintenance")
    health = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=BOUND)
    assert health.status == pb.HealthCheckReply.NOT_SERVING and health.paused and "maintenance" in health.reason
    router.router.safety.resume(None)


async def test_reflection_lists_the_service(sims, routers, grpc_door):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    _, channel = await grpc_door(router)
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = reflect.ServerReflectionInfo(timeout=BOUND)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    listed = await call.read()
    await call.write(reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME))
    described = await call.read()
    await call.done_writing()
    names = [s.name for s in listed.list_services_response.service]
    assert SERVICE_NAME == "ollamaproxy.v1.InferenceRouter" and SERVICE_NAME in names
    assert described.file_descriptor_response.file_descriptor_proto


async def test_pause_is_respected(sims, routers, grpc_door):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    stub, _ = await grpc_door(router)
    router.router.safety.pause(None, "maintenance")
    waiting = asyncio.ensure_future(stub.Generate(pb.GenerateRequest(
        model="m:1b", prompt="x", options=options(num_predict=2)), timeout=BOUND))
    await wait_until(lambda: router.scheduler.queue_depth == 1, message="the call to wait in the queue")
    assert sim.stats.requests == 0 and not waiting.done()
    router.router.safety.resume(None)
    reply = await waiting
    assert reply.text == sim_text(2)


async def test_errors_map_to_status_codes(sims, routers, grpc_door):
    gpu = await sims("gpu", ["qwen3:8b"])
    cpu = await sims("cpu", ["qwen3:8b"])
    router = await routers([backend_entry(gpu, models=["qwen3*"]), backend_entry(cpu)], queue={"max_depth": 0})
    stub, _ = await grpc_door(router)
    cases = [
        (pb.GenerateRequest(model="qwen3:8b", prompt="x", routing=pb.Routing(target_backend="cpu")),
         grpc.StatusCode.FAILED_PRECONDITION, "model_affinity_violation"),
        (pb.GenerateRequest(model="mistral", prompt="x"), grpc.StatusCode.NOT_FOUND, "model_not_found"),
        (pb.GenerateRequest(prompt="x"), grpc.StatusCode.INVALID_ARGUMENT, "missing_model"),
        (pb.GenerateRequest(model="qwen3:8b", prompt="x", routing=pb.Routing(max_latency_ms=-1)),
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_field"),
        (pb.GenerateRequest(model="qwen3:8b", prompt="x", routing=pb.Routing(target_backend="tpu9")),
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_header"),
        (pb.GenerateRequest(model="qwen3:8b", prompt="x", messages=[pb.ChatMessage(role="user", content="y")]),
         grpc.StatusCode.INVALID_ARGUMENT, "invalid_field"),
    ]
    for request, status, code in cases:
        for rpc in (stub.Generate, _first_chunk(stub.GenerateStream)):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await rpc(request, timeout=BOUND)
            assert (failed.value.code(), error_code(failed.value)) == (status, code), failed.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.Generate(pb.GenerateRequest(model="qwen3:8b", prompt="x", routing=pb.Routing(
            target_backend="cpu")), timeout=BOUND)
    assert "gpu" in failed.value.details()  # the router's message, as is
    gpu.behaviour.hold = asyncio.Event()
    running = asyncio.ensure_future(stub.Generate(pb.GenerateRequest(model="qwen3:8b", prompt="x"), timeout=BOUND))
    await wait_until(lambda: gpu.stats.active == 1)
    with pytest.raises(grpc.aio.AioRpcError) as failed:  # one slot busy and no queue: 503 queue_full
        await stub.Generate(pb.GenerateRequest(model="qwen3:8b", prompt="x"), timeout=BOUND)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and error_code(failed.value) == "queue_full"
    gpu.behaviour.hold.set()
    assert (await running).done


def _first_chunk(method):
    async def call(request, timeout):
        async for chunk in method(request, timeout=timeout):
            return chunk
    return call


async def test_cancelled_stream_frees_the_slot(sims, routers, grpc_door):
    sim = await sims("a", ["m:1b"])
    sim.behaviour.hold = asyncio.Event()
    router = await routers([backend_entry(sim)])
    stub, _ = await grpc_door(router)
    call = stub.GenerateStream(pb.GenerateRequest(model="m:1b", prompt="x"), timeout=BOUND)
    await wait_until(lambda: sim.stats.active == 1, message="the call to reach the backend")
    call.cancel()
    await wait_until(lambda: sim.stats.cancelled == 1, message="the backend to see the cancellation")
    await router.assert_no_leaks()


async def test_loopback_only_unless_allowed(sims, routers):
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)])
    with pytest.raises(ValueError, match="loopback"):
        await start_grpc(router.router, "0.0.0.0:0")
    with pytest.raises(ValueError, match="HOST:PORT"):
        await start_grpc(router.router, "localhost")


def test_status_mapping():
    assert grpc_status_for(400) == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_status_for(403) == grpc.StatusCode.PERMISSION_DENIED
    assert grpc_status_for(404) == grpc.StatusCode.NOT_FOUND
    assert grpc_status_for(409) == grpc.StatusCode.FAILED_PRECONDITION
    assert grpc_status_for(503) == grpc.StatusCode.UNAVAILABLE
    assert grpc_status_for(502) == grpc.StatusCode.UNAVAILABLE
    assert grpc_status_for(504) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_status_for(418) == grpc.StatusCode.FAILED_PRECONDITION


async def test_config_enables_the_grpc_listener(sims, routers):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim = await sims("a", ["m:1b"])
    router = await routers([backend_entry(sim)], grpc={"enabled": True, "listen": f"127.0.0.1:{port}"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceRouterStub(channel)
        reply = await stub.Generate(pb.GenerateRequest(model="m:1b", prompt="hi"), timeout=BOUND)
    assert reply.text and router.router._grpc is not None


def test_grpc_listen_must_be_loopback_unless_allowed():
    from ollamaproxy.config import ConfigError, parse_config

    base = {"backends": [{"id": "a", "url": "http://127.0.0.1:1"}]}
    with pytest.raises(ConfigError, match="not a loopback address"):
        parse_config({**base, "grpc": {"enabled": True, "listen": "0.0.0.0:11438"}})
    parse_config({**base, "grpc": {"enabled": True, "listen": "0.0.0.0:11438", "allow_remote": True}})
