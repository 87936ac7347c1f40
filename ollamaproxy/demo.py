"""`ollamaproxy demo`: four backends (npu, igpu, nvidia simulated; cpu a real llama.cpp when available) and the router."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

from aiohttp import web

from ollamaproxy.config import BackendConfig, Config, ServerConfig, TelemetryConfig
from ollamaproxy.llamacpp import DEFAULT_ALIAS, BackendUnavailable, LlamaCppServer, fetch_model, require_xllamacpp
from ollamaproxy.service import Router
from ollamaproxy.sim import create_sim_app

log = logging.getLogger("ollamaproxy.demo")

# id, hardware, tokens/s, watts, TTFT ms, slots, models
DEMO_BACKENDS = (
    ("npu0", "npu", 12.0, 3.0, 400.0, 1, ["llama3.2:1b", "qwen3:0.6b"]),
    ("igpu0", "igpu", 30.0, 15.0, 250.0, 1, ["llama3.2:1b", "qwen3:0.6b", "nomic-embed-text"]),
    ("nvidia0", "nvidia", 120.0, 250.0, 80.0, 2, ["llama3.2:1b", "qwen3:0.6b", "llama3.1:8b", "nomic-embed-text"]),
    ("cpu0", "cpu", 8.0, 45.0, 600.0, 2, ["llama3.2:1b", "qwen3:0.6b", "nomic-embed-text"]),
)
REAL_CPU_ID = "cpu0"


def demo_config(port: int, sim_base_port: int, real_cpu: bool = False) -> Config:
    backends = []
    for index, (ident, hardware, tps, watts, ttft_ms, slots, _models) in enumerate(DEMO_BACKENDS):
        kind = "openai" if real_cpu and ident == REAL_CPU_ID else "ollama"
        backends.append(BackendConfig(id=ident, kind=kind, url=f"http://127.0.0.1:{sim_base_port + index}",
                                      hardware=hardware, max_concurrent=slots, power_watts=watts,
                                      latency_ms=ttft_ms, tokens_per_second=tps))
    # The demo's hardware is imaginary: no host sensors, so no breaker trips on this machine's readings.
    return Config(server=ServerConfig(listen=f"127.0.0.1:{port}"), backends=backends,
                  telemetry=TelemetryConfig(enabled=False))


def _start_real_cpu(port: int) -> LlamaCppServer:
    require_xllamacpp()
    return LlamaCppServer(fetch_model(), alias=DEFAULT_ALIAS, port=port).start(timeout=120)


async def run_demo(port: int, sim_base_port: int, real_cpu: bool = True) -> None:
    runners: list[web.AppRunner] = []
    llama: LlamaCppServer | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    cpu_port = sim_base_port + [b[0] for b in DEMO_BACKENDS].index(REAL_CPU_ID)
    note = ""
    if real_cpu:
        try:
            llama = await asyncio.to_thread(_start_real_cpu, cpu_port)
        except (BackendUnavailable, RuntimeError) as error:
            note = f"(cpu0 is simulated: {error})"
    else:
        note = "(cpu0 is simulated: --no-real-cpu)"
    router = Router(demo_config(port, sim_base_port, real_cpu=llama is not None))
    try:
        for index, (ident, _hw, tps, watts, _ttft, _slots, models) in enumerate(DEMO_BACKENDS):
            if llama is not None and ident == REAL_CPU_ID:
                continue
            app = create_sim_app(ident, models, tokens_per_second=tps, watts=watts)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", sim_base_port + index).start()
        await router.start()
        print(_instructions(router.url, llama is not None, note), flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await router.stop()
        for runner in reversed(runners):
            await runner.cleanup()
        if llama is not None:
            await asyncio.to_thread(llama.stop)
        print("demo stopped", flush=True)


def _instructions(url: str, real_cpu: bool, note: str) -> str:
    rows = []
    for ident, hw, tps, watts, _ttft, _slots, models in DEMO_BACKENDS:
        if real_cpu and ident == REAL_CPU_ID:
            rows.append(f"  {ident:<8} {hw:<7} real llama.cpp (SmolLM2-135M)  models: {DEFAULT_ALIAS}")
        else:
            rows.append(f"  {ident:<8} {hw:<7} {tps:>5.0f} tok/s {watts:>5.0f} W  models: {', '.join(models)}")
    chat = json.dumps({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hello"}]})
    real = json.dumps({"model": DEFAULT_ALIAS, "stream": False,
                       "messages": [{"role": "user", "content": "Write a haiku about routers."}]})
    lines = [f"ollamaproxy demo: router at {url} in front of four backends {note}".rstrip(), *rows, "", "Try it:",
             f"  curl {url}/api/tags",
             f"  curl -i {url}/api/chat -d '{chat}'",
             f"  curl -i {url}/api/chat -H 'X-Target-Backend: npu0' -d '{chat}'"]
    if real_cpu:
        lines.append(f"  curl {url}/api/chat -d '{real}'   # real text, via translation")
    lines += [f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\",
              "       -d '{\"model\": \"llama3.2:1b\", \"stream\": true, \"messages\": [{\"role\": \"user\", "
              "\"content\": \"hi\"}]}'",
              f"  curl -i {url}/api/pull -d '{{\"model\": \"x\"}}'      # blocked: 403",
              "", "Press Ctrl-C to stop."]
    return "\n".join(lines)
