#!/usr/bin/env python3
"""Proxy overhead: the router against the same simulated backend reached directly, in one interleaved run.

Starts `ollamaproxy sim` (no token pacing) and `ollamaproxy serve` as separate processes, then drives
both the sim's URL ("direct") and the router's URL ("proxy") with the same lean HTTP/1.1 keep-alive
client, alternating short batches so that drift on the machine hits both sides alike. Reports latency,
throughput and the router's CPU time per request and per streamed token, and checks the issue's targets.

    .venv/bin/python bench/proxy_overhead.py            # full run (about 1-2 minutes on 2 cores)
    .venv/bin/python bench/proxy_overhead.py --quick    # smoke run (a few seconds)
    .venv/bin/python bench/proxy_overhead.py --json     # also print the JSON written to bench/results/

Exit status is 0 whether or not the targets are met (it is a measurement); 1 only when the bench
itself could not run (processes failed to start, requests failed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "proxy_overhead.json"
MODEL = "bench:1b"
STREAM_TOKENS = 256
PACED_TOKENS = 128
PACED_TPS = 1000.0

TARGET_ADDED_P50_MS = 0.35      # added latency p50 per request at concurrency 1 (non-stream)
TARGET_CPU_US_PER_TOKEN = 10.0  # router CPU per streamed token
TARGET_THROUGHPUT_RATIO = 0.25  # proxy requests/s at concurrency 32 as a share of direct

try:  # psutil is optional: /proc/PID/stat is read when it is missing
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None


# ---------------------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    path: str
    body: dict
    concurrency: int
    stream: str | None = None       # None, "ndjson" or "sse"
    tokens: int = 0                 # tokens each streamed response should carry
    tokens_per_second: float = 0.0  # sim pacing per stream for this scenario (0 = as fast as it can)


def _scenarios() -> list[Scenario]:
    nonstream = {"model": MODEL, "prompt": "hello", "stream": False, "options": {"num_predict": 1}}
    ndjson = {"model": MODEL, "prompt": "hello", "stream": True, "options": {"num_predict": STREAM_TOKENS}}
    sse = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": True,
           "max_tokens": STREAM_TOKENS}
    out = []
    for c in (1, 32):
        out.append(Scenario(f"nonstream_c{c}", f"/api/generate non-stream, 1 token, c={c}",
                            "/api/generate", nonstream, c))
    for c in (1, 32):
        out.append(Scenario(f"ndjson_c{c}", f"/api/generate NDJSON {STREAM_TOKENS} tokens, c={c}",
                            "/api/generate", ndjson, c, "ndjson", STREAM_TOKENS))
    # Paced like a real model (one token per write, 1 ms apart): the router then relays one token per
    # chunk, which is the per-chunk cost real traffic pays; unpaced streams arrive coalesced.
    paced = {**ndjson, "options": {"num_predict": PACED_TOKENS}}
    out.append(Scenario("ndjson_paced_c8", f"/api/generate NDJSON {PACED_TOKENS} tokens paced "
                        f"{PACED_TPS:g} tok/s, c=8", "/api/generate", paced, 8, "ndjson", PACED_TOKENS, PACED_TPS))
    for c in (1, 32):
        out.append(Scenario(f"sse_c{c}", f"/v1/chat/completions SSE {STREAM_TOKENS} tokens, c={c}",
                            "/v1/chat/completions", sse, c, "sse", STREAM_TOKENS))
    return out


# Marker that appears exactly once in every token chunk (and not in the final chunk) of each format.
_TOKEN_MARKER = {"ndjson": b'"done":false', "sse": b'"finish_reason":null'}


# ---------------------------------------------------------------------------------------- lean HTTP client


class HttpError(Exception):
    pass


@dataclass
class Reply:
    status: int
    t_first: float          # perf_counter at the first body byte
    t_end: float            # perf_counter at the last byte
    body: bytes
    chunks: int             # HTTP chunks received (chunked encoding), 0 for Content-Length bodies


_HEAD, _BODY, _SIZE, _DATA, _TRAILER, _IDLE = range(6)


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with an incremental response parser (no per-chunk awaits).

    Timestamps are taken inside data_received, so they do not include the wake-up of the awaiting task.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.state = _IDLE
        self.closed = False
        self.must_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(HttpError(f"connection lost: {exc!r}"))

    def send(self, raw: bytes) -> asyncio.Future:
        if self.closed or self.transport is None:
            raise HttpError("connection is closed")
        self.fut = self.loop.create_future()
        self.state = _HEAD
        self.status = 0
        self.t_first = 0.0
        self.parts: list[bytes] = []
        self.chunks = 0
        self.need = 0
        self.transport.write(raw)
        return self.fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _finish(self) -> None:
        now = time.perf_counter()
        self.state = _IDLE
        if not self.t_first:
            self.t_first = now
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(Reply(self.status, self.t_first, now, b"".join(self.parts), self.chunks))

    def data_received(self, data: bytes) -> None:  # noqa: C901 - a small state machine
        buf = self.buf
        buf += data
        while True:
            state = self.state
            if state == _DATA:
                need = self.need
                if len(buf) < need + 2:
                    if buf and not self.t_first:
                        self.t_first = time.perf_counter()
                    return
                if not self.t_first:
                    self.t_first = time.perf_counter()
                self.parts.append(bytes(buf[:need]))
                del buf[:need + 2]
                self.chunks += 1
                self.state = _SIZE
            elif state == _SIZE:
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(buf[:i]).split(b";", 1)[0], 16)
                del buf[:i + 2]
                if size:
                    self.need = size
                    self.state = _DATA
                else:
                    self.state = _TRAILER
            elif state == _HEAD:
                i = buf.find(b"\r\n\r\n")
                if i < 0:
                    return
                head = bytes(buf[:i]).lower()
                del buf[:i + 4]
                self.status = int(head[9:12])
                self.must_close = b"\r\nconnection: close" in head
                if b"\r\ntransfer-encoding: chunked" in head:
                    self.state = _SIZE
                else:
                    j = head.find(b"\r\ncontent-length:")
                    if j < 0:
                        self._fail("response has neither Content-Length nor chunked encoding")
                        return
                    end = head.find(b"\r\n", j + 2)
                    self.need = int(head[j + 17:end if end >= 0 else None])
                    self.state = _BODY
                    if self.need == 0:
                        self._finish()
                        return
            elif state == _BODY:
                if not buf:
                    return
                if not self.t_first:
                    self.t_first = time.perf_counter()
                take = min(len(buf), self.need)
                self.parts.append(bytes(buf[:take]))
                del buf[:take]
                self.need -= take
                if self.need == 0:
                    self._finish()
                    return
            elif state == _TRAILER:
                i = buf.find(b"\r\n")
                if i < 0:
                    return
                del buf[:i + 2]
                if i == 0:
                    self._finish()
                    return
            else:  # _IDLE: unexpected bytes between responses
                buf.clear()
                return

    def _fail(self, message: str) -> None:
        self.state = _IDLE
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(HttpError(message))
        self.close()


async def connect(host: str, port: int) -> HttpConn:
    loop = asyncio.get_running_loop()
    _transport, conn = await loop.create_connection(lambda: HttpConn(loop), host, port)
    return conn


def build_request(host: str, port: int, scenario: Scenario) -> bytes:
    body = json.dumps(scenario.body, separators=(",", ":")).encode()
    head = (f"POST {scenario.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: */*\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# ------------------------------------------------------------------------------------------- CPU readings


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu_clock(pid: int) -> int:
    # Linux encodes "the CPU-time clock of process pid" as a negative clock id (CPUCLOCK_SCHED of the
    # whole thread group): nanosecond resolution, unlike the 10 ms ticks of /proc/PID/stat.
    return ((~pid) << 3) | 2


def _cpu_source() -> str:
    try:
        time.clock_gettime(_process_cpu_clock(os.getpid()))
        return "clock_gettime(process CPU clock)"
    except (OSError, AttributeError, OverflowError):
        return "psutil" if psutil is not None else "/proc/PID/stat"


CPU_SOURCE = _cpu_source()


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads)."""
    if CPU_SOURCE.startswith("clock_gettime"):
        return time.clock_gettime(_process_cpu_clock(pid))
    if psutil is not None:
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15)


# ------------------------------------------------------------------------------------------------ batches


@dataclass
class Side:
    """Everything measured for one side (direct or proxy) of one scenario, over all its batches."""

    latencies: list[float] = field(default_factory=list)   # seconds, request sent -> last byte
    ttfb: list[float] = field(default_factory=list)        # seconds, request sent -> first body byte
    completed: int = 0
    errors: int = 0
    elapsed: float = 0.0
    tokens: int = 0
    chunks: int = 0
    router_cpu: float = 0.0
    sim_cpu: float = 0.0
    client_cpu: float = 0.0
    batch_rps: list[float] = field(default_factory=list)
    batch_p50_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)


class Target:
    def __init__(self, name: str, host: str, port: int):
        self.name = name
        self.host = host
        self.port = port
        self.conns: list[HttpConn] = []

    async def ensure(self, n: int) -> None:
        self.conns = [c for c in self.conns if not c.closed]
        while len(self.conns) < n:
            self.conns.append(await connect(self.host, self.port))

    async def replace(self, conn: HttpConn) -> HttpConn:
        conn.close()
        fresh = await connect(self.host, self.port)
        self.conns[self.conns.index(conn)] = fresh
        return fresh

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.conns = []


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[index]


async def run_batch(target: Target, scenario: Scenario, raw: bytes, seconds: float, max_requests: int,
                    side: Side | None, pids: dict[str, int], request_timeout: float) -> None:
    """Run `scenario` against `target` for about `seconds` (never more than `max_requests` requests)."""
    await target.ensure(scenario.concurrency)
    marker = _TOKEN_MARKER.get(scenario.stream or "")
    latencies: list[float] = []
    issued = 0
    errors: list[str] = []
    tokens = chunks = 0

    async def worker(index: int) -> None:
        nonlocal issued, tokens, chunks
        conn = target.conns[index]
        perf = time.perf_counter
        while issued < max_requests and perf() < deadline:
            issued += 1
            t0 = perf()
            try:
                reply: Reply = await conn.send(raw)
            except HttpError as error:
                errors.append(str(error))
                conn = await target.replace(conn)
                continue
            if reply.status != 200:
                errors.append(f"HTTP {reply.status}: {reply.body[:200]!r}")
                continue
            if marker is not None:
                got = reply.body.count(marker)
                if got != scenario.tokens:
                    errors.append(f"expected {scenario.tokens} tokens, got {got}")
                    continue
                tokens += got
                chunks += reply.chunks
                if side is not None:
                    side.ttfb.append(reply.t_first - t0)
            latencies.append(reply.t_end - t0)
            if conn.must_close:
                conn = await target.replace(conn)

    router_pid, sim_pid = pids["router"], pids["sim"]
    cpu_router0 = process_cpu_seconds(router_pid)
    cpu_sim0 = process_cpu_seconds(sim_pid)
    cpu_client0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    async with asyncio.timeout(seconds + request_timeout):
        await asyncio.gather(*(worker(i) for i in range(scenario.concurrency)))
    elapsed = time.perf_counter() - start
    cpu_client = time.process_time() - cpu_client0
    cpu_sim = process_cpu_seconds(sim_pid) - cpu_sim0
    cpu_router = process_cpu_seconds(router_pid) - cpu_router0
    if side is None:  # warm-up
        if errors:
            raise RuntimeError(f"{target.name} {scenario.name} warm-up failed: {errors[0]}")
        return
    side.latencies.extend(latencies)
    side.completed += len(latencies)
    side.errors += len(errors)
    side.error_samples.extend(errors[: max(0, 3 - len(side.error_samples))])
    side.elapsed += elapsed
    side.tokens += tokens
    side.chunks += chunks
    side.router_cpu += cpu_router
    side.sim_cpu += cpu_sim
    side.client_cpu += cpu_client
    side.batch_rps.append(len(latencies) / elapsed if elapsed > 0 else 0.0)
    side.batch_p50_ms.append(_percentile(latencies, 50) * 1000)


async def run_scenario(scenario: Scenario, direct: Target, proxy: Target, args: argparse.Namespace,
                       pids: dict[str, int]) -> dict[str, Any]:
    raws = {"direct": build_request(direct.host, direct.port, scenario),
            "proxy": build_request(proxy.host, proxy.port, scenario)}
    targets = {"direct": direct, "proxy": proxy}
    sides = {"direct": Side(), "proxy": Side()}
    set_sim_pacing(direct, scenario.tokens_per_second)
    try:
        await _run_rounds(scenario, targets, raws, sides, args, pids)
    finally:
        if scenario.tokens_per_second:
            set_sim_pacing(direct, 0.0)
    result = summarise(scenario, sides["direct"], sides["proxy"])
    result["sim_tokens_per_second"] = scenario.tokens_per_second
    return result


def set_sim_pacing(direct: Target, tokens_per_second: float) -> None:
    body = json.dumps({"tokens_per_second": tokens_per_second}).encode()
    request = urllib.request.Request(f"http://{direct.host}:{direct.port}/_sim/behaviour", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status != 200:
            raise RuntimeError(f"sim refused tokens_per_second={tokens_per_second}: HTTP {response.status}")


async def _run_rounds(scenario: Scenario, targets: dict[str, Target], raws: dict[str, bytes],
                      sides: dict[str, Side], args: argparse.Namespace, pids: dict[str, int]) -> None:
    for name in ("direct", "proxy"):  # warm-up: connections, caches, the router's upstream pool
        await run_batch(targets[name], scenario, raws[name], args.warmup_seconds, args.max_requests, None,
                        pids, args.request_timeout)
    for round_no in range(args.rounds):
        # Interleaved A-B / B-A: each side goes first in half of the rounds, so linear drift cancels.
        order = ("direct", "proxy") if round_no % 2 == 0 else ("proxy", "direct")
        for name in order:
            await run_batch(targets[name], scenario, raws[name], args.batch_seconds, args.max_requests,
                            sides[name], pids, args.request_timeout)


def _side_summary(side: Side, scenario: Scenario) -> dict[str, Any]:
    ms = 1000.0
    out: dict[str, Any] = {
        "requests": side.completed,
        "errors": side.errors,
        "p50_ms": round(_percentile(side.latencies, 50) * ms, 4),
        "p95_ms": round(_percentile(side.latencies, 95) * ms, 4),
        "p99_ms": round(_percentile(side.latencies, 99) * ms, 4),
        "requests_per_s": round(side.completed / side.elapsed, 1) if side.elapsed else 0.0,
        "batch_requests_per_s": [round(v, 1) for v in side.batch_rps],
        "seconds": round(side.elapsed, 3),
        "sim_cpu_us_per_request": round(side.sim_cpu / side.completed * 1e6, 1) if side.completed else None,
        "client_cpu_us_per_request": round(side.client_cpu / side.completed * 1e6, 1) if side.completed else None,
    }
    if scenario.stream:
        out["ttfb_p50_ms"] = round(_percentile(side.ttfb, 50) * ms, 4)
        out["ttfb_p95_ms"] = round(_percentile(side.ttfb, 95) * ms, 4)
        out["tokens"] = side.tokens
        out["tokens_per_s"] = round(side.tokens / side.elapsed, 1) if side.elapsed else 0.0
        out["http_chunks_per_response"] = round(side.chunks / side.completed, 1) if side.completed else None
    if side.error_samples:
        out["error_samples"] = side.error_samples
    return out


def summarise(scenario: Scenario, direct: Side, proxy: Side) -> dict[str, Any]:
    d, p = _side_summary(direct, scenario), _side_summary(proxy, scenario)
    paired = sorted(pp - dd for dd, pp in zip(direct.batch_p50_ms, proxy.batch_p50_ms))
    result: dict[str, Any] = {
        "label": scenario.label,
        "concurrency": scenario.concurrency,
        "stream": scenario.stream,
        "direct": d,
        "proxy": p,
        "added_p50_ms": round(p["p50_ms"] - d["p50_ms"], 4),
        "added_p95_ms": round(p["p95_ms"] - d["p95_ms"], 4),
        # The added p50 of each round (proxy batch p50 minus the neighbouring direct batch p50).
        "added_p50_ms_per_round": {"min": round(paired[0], 4), "median": round(_percentile(paired, 50), 4),
                                   "max": round(paired[-1], 4)} if paired else None,
        "throughput_ratio": round(p["requests_per_s"] / d["requests_per_s"], 4) if d["requests_per_s"] else None,
        "router_cpu_seconds": round(proxy.router_cpu, 4),
        "router_cpu_us_per_request": round(proxy.router_cpu / proxy.completed * 1e6, 1) if proxy.completed else None,
        # The router should be idle while the direct batches run; this shows its background cost.
        "router_idle_cpu_seconds_during_direct": round(direct.router_cpu, 4),
    }
    if scenario.stream:
        result["added_ttfb_p50_ms"] = round(p["ttfb_p50_ms"] - d["ttfb_p50_ms"], 4)
        result["router_cpu_us_per_token"] = (round(proxy.router_cpu / proxy.tokens * 1e6, 3)
                                             if proxy.tokens else None)
        # HTTP chunks the client received through the router. The router passes the backend's chunks on
        # unchanged (it re-frames only a chunk cut by the end of a read), so with the sim this is one token
        # per chunk; what differs between paced and unpaced streams is how many chunks share one read.
        result["tokens_per_relayed_chunk"] = round(proxy.tokens / proxy.chunks, 2) if proxy.chunks else None
        result["router_cpu_us_per_relayed_chunk"] = (round(proxy.router_cpu / proxy.chunks * 1e6, 2)
                                                     if proxy.chunks else None)
    return result


# ------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Child:
    """A child process started in its own session, stopped with terminate -> wait -> kill."""

    def __init__(self, name: str, argv: list[str], stdout: Any, stderr_path: Path, src: Path):
        self.name = name
        self.argv = argv
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(argv, cwd=src, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                     stderr=self._stderr, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def measured_pid(self) -> int:
        """The process doing the work: the child itself, or its deepest descendant when wrapped (py-spy)."""
        if psutil is None:
            return self.proc.pid
        try:
            descendants = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return self.proc.pid
        python = [p for p in descendants if "python" in (p.name() or "").lower()]
        return (python or descendants or [psutil.Process(self.proc.pid)])[-1].pid

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            return self.stderr_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the working process first (so a wrapping profiler can write its output), then the child."""
        try:
            if self.proc.poll() is None:
                inner = self.measured_pid()
                if inner != self.proc.pid:
                    try:
                        os.kill(inner, signal.SIGTERM)
                        self.proc.wait(timeout)
                    except (ProcessLookupError, subprocess.TimeoutExpired):
                        pass
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self._stderr.close()


def wait_ready(url: str, child: Child, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    last = ""
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.stderr_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as error:
            last = str(error)
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} not ready at {url} within {deadline_s:g}s ({last}):\n{child.stderr_tail()}")


def router_config(listen_port: int, sim_port: int, state_dir: Path) -> str:
    # Everything a real install runs stays on (telemetry, request log with its SQLite sink); only
    # the management API is off (its port could clash) and the request log goes to the temp dir.
    return f"""\
[server]
listen = "127.0.0.1:{listen_port}"
management = ""

[request_log]
path = "{state_dir / 'requests.sqlite3'}"

[[backends]]
id = "bench"
kind = "ollama"
url = "http://127.0.0.1:{sim_port}"
hardware = "cpu"
max_concurrent = 64

[queue]
max_depth = 1024
"""


# --------------------------------------------------------------------------------------------- reporting


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def build_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets = []

    def add(name: str, value: Any, limit: float, higher_is_better: bool, unit: str, source: str) -> None:
        if value is None:
            return
        ok = value >= limit if higher_is_better else value <= limit
        targets.append({"target": name, "value": value, "limit": limit, "unit": unit,
                        "comparison": ">=" if higher_is_better else "<=", "pass": bool(ok), "from": source})

    if "nonstream_c1" in results:
        add("added latency p50, non-stream, c=1", results["nonstream_c1"]["added_p50_ms"],
            TARGET_ADDED_P50_MS, False, "ms", "nonstream_c1")
    for fmt in ("ndjson", "sse"):
        names = [n for n in (f"{fmt}_c1", f"{fmt}_c32") if n in results]
        cpu = sum(results[n]["router_cpu_seconds"] for n in names)
        tokens = sum(results[n]["proxy"]["tokens"] for n in names)
        if tokens:
            add(f"router CPU per streamed token, {fmt.upper()} unpaced (c=1 and c=32 pooled)",
                round(cpu / tokens * 1e6, 3), TARGET_CPU_US_PER_TOKEN, False, "us", "+".join(names))
    if "ndjson_paced_c8" in results and results["ndjson_paced_c8"]["router_cpu_us_per_token"] is not None:
        add("router CPU per streamed token, NDJSON paced (1 token per chunk and per read)",
            results["ndjson_paced_c8"]["router_cpu_us_per_token"], TARGET_CPU_US_PER_TOKEN, False, "us",
            "ndjson_paced_c8")
    for name in ("nonstream_c32", "ndjson_c32", "sse_c32"):
        if name in results and results[name]["throughput_ratio"] is not None:
            add(f"throughput proxy/direct, {name.replace('_c32', '')}, c=32", results[name]["throughput_ratio"],
                TARGET_THROUGHPUT_RATIO, True, "ratio", name)
    return targets


def print_report(report: dict[str, Any]) -> None:
    results = report["scenarios"]
    print()
    print(f"proxy overhead — {report['meta']['cpu_count']} CPUs, Python {report['meta']['python']}, "
          f"aiohttp {report['meta']['aiohttp']}, {report['meta']['rounds']} interleaved rounds x "
          f"{report['meta']['batch_seconds']}s batches per side")
    header = (f"{'scenario':<17}{'side':<8}{'req':>7}{'err':>5}{'p50 ms':>10}{'p95 ms':>10}"
              f"{'ttfb p50':>10}{'req/s':>10}{'tok/s':>11}")
    print(header)
    print("-" * len(header))
    for name, res in results.items():
        for side in ("direct", "proxy"):
            s = res[side]
            print(f"{name if side == 'direct' else '':<17}{side:<8}{s['requests']:>7}{s['errors']:>5}"
                  f"{s['p50_ms']:>10.3f}{s['p95_ms']:>10.3f}{_fmt(s.get('ttfb_p50_ms')):>10}"
                  f"{s['requests_per_s']:>10.1f}{_fmt(s.get('tokens_per_s'), '.0f'):>11}")
        per_round = res["added_p50_ms_per_round"]
        extra = (f"  added p50 {res['added_p50_ms']:+.3f} ms (per round {per_round['min']:+.3f}.."
                 f"{per_round['max']:+.3f}), p95 {res['added_p95_ms']:+.3f} ms")
        if res["stream"]:
            extra += f", ttfb {res['added_ttfb_p50_ms']:+.3f} ms"
        print(extra)
        extra = (f"  throughput proxy/direct {res['throughput_ratio']:.1%}; router CPU "
                 f"{res['router_cpu_us_per_request']} us/request")
        if res["stream"]:
            extra += (f", {res['router_cpu_us_per_token']} us/token, {res['router_cpu_us_per_relayed_chunk']} "
                      f"us/chunk, {res['tokens_per_relayed_chunk']} tokens per chunk received")
        print(extra)
    print()
    print("targets:")
    for t in report["targets"]:
        verdict = "PASS" if t["pass"] else "FAIL"
        value = f"{t['value']:.1%}" if t["unit"] == "ratio" else f"{t['value']:.3f} {t['unit']}"
        limit = f"{t['limit']:.0%}" if t["unit"] == "ratio" else f"{t['limit']:g} {t['unit']}"
        print(f"  [{verdict}] {t['target']}: {value} (target {t['comparison']} {limit})")
    print()
    streams = [r for r in results.values() if r["stream"]]
    if any(r["concurrency"] >= 32 and (r["throughput_ratio"] or 0) > 0.9 for r in streams):
        print("note: c=32 streams are bounded by the sim and this client sharing the CPUs, so a ratio near or\n"
              "      above 100% means 'not the bottleneck'.")
    if any(r["stream"] and not r.get("sim_tokens_per_second") for r in streams):
        print("note: unpaced streams reach the router coalesced (several chunks per read, so per-read costs are\n"
              "      shared); ndjson_paced_c8 is the case of real models: one token per chunk and one chunk per read,\n"
              "      so every token pays a wake-up, a recv and a send. Its us/token is the per-chunk cost.")


# ------------------------------------------------------------------------------------------------- main


async def bench(args: argparse.Namespace, sim: Child, router: Child, sim_port: int,
                router_port: int) -> dict[str, Any]:
    pids = {"router": router.measured_pid(), "sim": sim.pid}
    direct = Target("direct", "127.0.0.1", sim_port)
    proxy = Target("proxy", "127.0.0.1", router_port)
    wanted = set(args.scenarios.split(",")) if args.scenarios else None
    if wanted is not None:
        scenarios = [s for s in _scenarios() if s.name in wanted]
    else:
        scenarios = [s for s in _scenarios() if args.sse or s.stream != "sse"]
    if wanted:
        unknown = wanted - {s.name for s in _scenarios()}
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {}
    gc.collect()
    gc.freeze()
    try:
        for scenario in scenarios:
            t0 = time.monotonic()
            results[scenario.name] = await run_scenario(scenario, direct, proxy, args, pids)
            if not args.json:
                r = results[scenario.name]
                print(f"  {scenario.name:<14} done in {time.monotonic() - t0:5.1f}s: added p50 "
                      f"{r['added_p50_ms']:+.3f} ms, throughput ratio {r['throughput_ratio']:.1%}",
                      file=sys.stderr, flush=True)
    finally:
        direct.close()
        proxy.close()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (a few seconds)")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--rounds", type=int, help="interleaved direct/proxy rounds per scenario (default 8)")
    parser.add_argument("--batch-seconds", type=float, help="length of one batch (default 0.5)")
    parser.add_argument("--warmup-seconds", type=float, help="warm-up batch per side per scenario (default 0.3)")
    parser.add_argument("--max-requests", type=int, default=20000, help="upper bound on requests per batch")
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument("--no-sse", dest="sse", action="store_false", help="skip the SSE scenarios")
    parser.add_argument("--scenarios", help="comma-separated subset, e.g. nonstream_c1,ndjson_c1")
    parser.add_argument("--router-prefix", default="",
                        help="command put in front of the router's python, e.g. "
                             "'py-spy record -o /tmp/r.svg --' (its numbers are then not comparable)")
    parser.add_argument("--router-python-args", default="",
                        help="extra interpreter arguments for the router, e.g. '-m cProfile -o /tmp/router.prof'")
    parser.add_argument("--src", type=Path, default=ROOT,
                        help="directory holding the ollamaproxy package to run (default: this checkout); "
                             "e.g. an unpacked `git archive` of another commit, to compare versions")
    args = parser.parse_args(argv)
    args.src = args.src.resolve()
    if not (args.src / "ollamaproxy" / "__init__.py").is_file():
        parser.error(f"--src {args.src}: no ollamaproxy package there")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 8
    if args.batch_seconds is None:
        args.batch_seconds = 0.2 if args.quick else 0.5
    if args.warmup_seconds is None:
        args.warmup_seconds = 0.1 if args.quick else 0.3
    if args.rounds < 1 or args.batch_seconds <= 0 or args.max_requests < 1:
        parser.error("--rounds, --batch-seconds and --max-requests must be positive")
    return args


def _git_commit(src: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "ollamaproxy"],
                           capture_output=True, text=True, timeout=5)
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    sim_port, router_port = free_port(), free_port()
    while router_port == sim_port:
        router_port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="proxy_overhead_"))
    config_path = tmp / "router.toml"
    config_path.write_text(router_config(router_port, sim_port, config_path.parent))
    python = [sys.executable]
    sim_argv = python + ["-m", "ollamaproxy", "sim", "--port", str(sim_port), "--name", "bench",
                         "--models", MODEL, "--tokens-per-second", "0"]
    router_argv = (shlex.split(args.router_prefix) + python + shlex.split(args.router_python_args)
                   + ["-m", "ollamaproxy", "serve", "--config", str(config_path)])
    children: list[Child] = []
    devnull = open(os.devnull, "wb")
    try:
        sim = Child("sim", sim_argv, devnull, tmp / "sim.stderr", args.src)
        children.append(sim)
        wait_ready(f"http://127.0.0.1:{sim_port}/", sim, 20)
        # The router's per-request JSON log on stdout is part of its real cost: keep it, send it to /dev/null.
        router = Child("router", router_argv, devnull, tmp / "router.stderr", args.src)
        children.append(router)
        wait_ready(f"http://127.0.0.1:{router_port}/", router, 30)
        started = time.monotonic()
        results = asyncio.run(bench(args, sim, router, sim_port, router_port))
        wall = time.monotonic() - started
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, TimeoutError) as error:
        print(f"proxy_overhead: bench failed: {error}", file=sys.stderr)
        for child in children:
            print(f"--- {child.name} stderr ---\n{child.stderr_tail()}", file=sys.stderr)
        return 1
    finally:
        for child in reversed(children):
            child.stop()
        devnull.close()
        shutil.rmtree(tmp, ignore_errors=True)

    import aiohttp

    report = {
        "meta": {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "quick": args.quick,
            "rounds": args.rounds,
            "batch_seconds": args.batch_seconds,
            "stream_tokens": STREAM_TOKENS,
            "wall_seconds": round(wall, 1),
            "cpu_source": CPU_SOURCE,
            "router_wrapped": bool(args.router_prefix or args.router_python_args),
            "src": str(args.src),
            "git_commit": _git_commit(args.src),
        },
        "scenarios": results,
    }
    report["targets"] = build_targets(results)
    errors = sum(r[s]["errors"] for r in results.values() for s in ("direct", "proxy"))
    report["meta"]["errors"] = errors
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
        if report["meta"]["router_wrapped"]:
            print("note: the router ran under a profiler; these numbers are not comparable with plain runs")
        if errors:
            print(f"warning: {errors} request(s) failed; see error_samples in {args.out}")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
