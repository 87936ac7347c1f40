"""`ollamaproxy demo`: four simulated backends (npu, igpu, nvidia, cpu) with the router in front."""

from __future__ import annotations

import asyncio
import json
import logging
import signal

from aiohttp import web

from ollamaproxy.config import BackendConfig, Config, ServerConfig
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


def demo_config(port: int, sim_base_port: int) -> Config:
    backends = [
        BackendConfig(id=ident, kind="ollama", url=f"http://127.0.0.1:{sim_base_port + index}", hardware=hardware,
                      max_concurrent=slots, power_watts=watts, latency_ms=ttft_ms)
        for index, (ident, hardware, _tps, watts, ttft_ms, slots, _models) in enumerate(DEMO_BACKENDS)
    ]
    return Config(server=ServerConfig(listen=f"127.0.0.1:{port}"), backends=backends)


async def run_demo(port: int, sim_base_port: int) -> None:
    runners: list[web.AppRunner] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    router = Router(demo_config(port, sim_base_port))
    try:
        for index, (ident, _hw, tps, watts, ttft_ms, _slots, models) in enumerate(DEMO_BACKENDS):
            app = create_sim_app(ident, models, tokens_per_second=tps, watts=watts)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", sim_base_port + index).start()
        await router.start()
        print(_instructions(router.url), flush=True)
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await router.stop()
        for runner in reversed(runners):
            await runner.cleanup()
        print("demo stopped", flush=True)


def _instructions(url: str) -> str:
    rows = "\n".join(f"  {ident:<8} {hw:<7} {tps:>5.0f} tok/s {watts:>5.0f} W  models: {', '.join(models)}"
                     for ident, hw, tps, watts, _ttft, _slots, models in DEMO_BACKENDS)
    chat = json.dumps({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hello"}]})
    return f"""ollamaproxy demo: router at {url} in front of four simulated backends
{rows}

Try it:
  curl {url}/api/tags
  curl -i {url}/api/chat -d '{chat}'
  curl -i {url}/api/chat -H 'X-Target-Backend: npu0' -d '{chat}'
  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "llama3.2:1b", "stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}'
  curl -i {url}/api/pull -d '{{"model": "x"}}'      # blocked: 403

Press Ctrl-C to stop."""
