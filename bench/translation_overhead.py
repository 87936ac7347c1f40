"""Translation overhead per streamed token against pass-through, in one interleaved run.

One router process in front of two simulated backends serving the same model name: an Ollama
one (the Ollama client's /api/chat passes through byte for byte) and an OpenAI-only one (the
same request is translated to /v1/chat/completions and its SSE stream converted back to NDJSON).
The client sends identical 256-token streaming chats, alternating batches pinned to each backend
with X-Target-Backend, and the router's CPU time (from /proc) is divided by the tokens it
streamed. Target: translated CPU per token ≤ 2 × pass-through CPU per token.

    .venv/bin/python bench/translation_overhead.py [--rounds 6] [--requests 40] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

TOKENS = 256
TARGET_RATIO = 2.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def wait_ready(url: str, deadline: float) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready")
            await asyncio.sleep(0.05)


async def batch(session: aiohttp.ClientSession, url: str, backend: str, requests: int) -> int:
    """Send `requests` streaming chats (4 at a time) to one backend; returns tokens received."""
    body = json.dumps({"model": "bench:1b", "messages": [{"role": "user", "content": "go"}],
                       "options": {"num_predict": TOKENS}}).encode()
    tokens = 0

    async def one() -> int:
        count = 0
        async with session.post(url + "/api/chat", data=body, headers={"X-Target-Backend": backend}) as resp:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                if line.strip() and b'"done":false' in line.replace(b" ", b""):
                    count += 1
        return count

    for start in range(0, requests, 4):
        tokens += sum(await asyncio.gather(*(one() for _ in range(min(4, requests - start)))))
    return tokens


async def run(rounds: int, requests: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ollamaproxy-bench-"))
    ports = {"ollama": free_port(), "openai": free_port(), "router": free_port()}
    procs = []
    try:
        for kind in ("ollama", "openai"):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ollamaproxy", "sim", "--port", str(ports[kind]), "--name", kind,
                 "--models", "bench:1b", "--tokens-per-second", "0", "--kind", kind],
                stderr=subprocess.DEVNULL))
        for kind in ("ollama", "openai"):
            await wait_ready(f"http://127.0.0.1:{ports[kind]}/", time.monotonic() + 30)
        config = tmp / "router.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{ports["router"]}"\nmanagement = ""\n[telemetry]\nenabled = false\n'
            '[request_log]\nenabled = false\n'
            f'[[backends]]\nid = "passthrough"\nkind = "ollama"\nurl = "http://127.0.0.1:{ports["ollama"]}"\n'
            'max_concurrent = 8\n'
            f'[[backends]]\nid = "translated"\nkind = "openai"\nurl = "http://127.0.0.1:{ports["openai"]}"\n'
            'max_concurrent = 8\n')
        router = subprocess.Popen([sys.executable, "-m", "ollamaproxy", "serve", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(router)
        url = f"http://127.0.0.1:{ports['router']}"
        await wait_ready(url + "/", time.monotonic() + 30)
        totals = {"passthrough": [0.0, 0], "translated": [0.0, 0]}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=8)) as session:
            for backend in totals:  # warm-up
                await batch(session, url, backend, 4)
            for index in range(rounds):
                order = ("passthrough", "translated") if index % 2 == 0 else ("translated", "passthrough")
                for backend in order:
                    before = cpu_seconds(router.pid)
                    tokens = await batch(session, url, backend, requests)
                    totals[backend][0] += cpu_seconds(router.pid) - before
                    totals[backend][1] += tokens
        per_token = {name: cpu / tokens * 1e6 for name, (cpu, tokens) in totals.items()}
        ratio = per_token["translated"] / per_token["passthrough"]
        return {"tokens": {k: v[1] for k, v in totals.items()},
                "router_cpu_us_per_token": {k: round(v, 2) for k, v in per_token.items()},
                "ratio": round(ratio, 2), "target_ratio": TARGET_RATIO, "target_met": ratio <= TARGET_RATIO}
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=40, help="streams per batch")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args.rounds, args.requests))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "translation_overhead.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    cpu = report["router_cpu_us_per_token"]
    print(f"router CPU per streamed token: pass-through {cpu['passthrough']:.2f} µs, "
          f"translated {cpu['translated']:.2f} µs ({report['tokens']['translated']} tokens each way)")
    print(f"translation / pass-through = {report['ratio']:.2f} (target ≤ {TARGET_RATIO:g}) "
          f"{'PASS' if report['target_met'] else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
