"""The CLI as a user runs it: serve without a config file, sim, python -m, SIGHUP reload."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import aiohttp

from conftest import wait_for_http


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_without_config_says_so_in_its_first_log_line(tmp_path):
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "ollamaproxy", "serve"], env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    try:
        first = json.loads(proc.stderr.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert first["event"] == "starting"
    assert "no config file" in first["config"] and "using defaults" in first["config"]
    assert first["listen"] == "127.0.0.1:11434" and "http://127.0.0.1:11435" in first["backends"]


def test_serve_bad_config_exits_with_problems(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[[backends]]\nid="x"\nurl="http://127.0.0.1:1"\nmax_concurrent=-1\n')
    run = subprocess.run([sys.executable, "-m", "ollamaproxy", "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "max_concurrent = -1" in run.stderr


async def test_serve_routes_to_a_sim_process(tmp_path):
    sim_port, proxy_port = _free_port(), _free_port()
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{proxy_port}"\nmanagement = ""\n\n[[backends]]\nid = "sim"\n'
                      f'url = "http://127.0.0.1:{sim_port}"\n')
    sim = subprocess.Popen([sys.executable, "-m", "ollamaproxy", "sim", "--port", str(sim_port), "--name", "s1",
                            "--models", "tiny:1b", "--tokens-per-second", "0"], stderr=subprocess.PIPE, text=True)
    proxy = None
    try:
        assert "listening" in sim.stderr.readline()
        proxy = subprocess.Popen([sys.executable, "-m", "ollamaproxy", "serve", "--config", str(config)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state")))
        await wait_for_http(f"http://127.0.0.1:{proxy_port}/")
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{proxy_port}/api/generate",
                                 json={"model": "tiny:1b", "prompt": "x", "stream": False}) as resp:
                assert resp.status == 200 and resp.headers["X-Backend-Used"] == "sim"
        proxy.terminate()
        out, err = proxy.communicate(timeout=15)
        assert proxy.returncode == 0
        line = json.loads(out.splitlines()[-1])
        assert line["path"] == "/api/generate" and line["backend"] == "sim" and line["status"] == 200
    finally:
        for proc in (proxy, sim):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)


async def _next_event(stream, name: str, timeout: float = 20.0) -> dict:
    """Read JSON log lines from a subprocess stream until one has `event == name`."""
    async with asyncio.timeout(timeout):
        while True:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"stream ended before the {name!r} event")
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name:
                return event


async def test_sighup_reload_applies_live_keys_and_keeps_a_bad_config_out(tmp_path, sims):
    sim = await sims("sim", ["tiny:1b"])
    proxy_port, management_port = _free_port(), _free_port()
    config = tmp_path / "config.toml"
    base = (f'[server]\nlisten = "127.0.0.1:{proxy_port}"\nmanagement = "127.0.0.1:{management_port}"\n'
            f'[[backends]]\nid = "sim"\nurl = "{sim.url}"\nmax_concurrent = 1\n')
    config.write_text(base)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollamaproxy", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state")))
    try:
        await _next_event(proc.stderr, "management_listening")
        config.write_text(base.replace("max_concurrent = 1", "max_concurrent = 3") + '[queue]\nmax_depth = 7\n'
                          + '[grpc]\nenabled = false\nlisten = "127.0.0.1:11439"\n')
        proc.send_signal(signal.SIGHUP)
        reloaded = await _next_event(proc.stderr, "reloaded")
        assert set(reloaded["applied"]) == {"queue", "backends.sim.max_concurrent"}
        assert reloaded["restart_required"] == ["grpc"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{management_port}/backends") as resp:
                backends = await resp.json()
        assert any(b["id"] == "sim" and b["capacity"] == 3 for b in backends["backends"]), backends
        config.write_text(base.replace("max_concurrent = 1", "max_concurrent = 0"))
        proc.send_signal(signal.SIGHUP)
        failed = await _next_event(proc.stderr, "reload_failed")
        assert any("max_concurrent = 0" in problem for problem in failed["problems"])
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{proxy_port}/api/generate",
                                 json={"model": "tiny:1b", "prompt": "x", "stream": False}) as resp:
                assert resp.status == 200  # still serving on the previous configuration
    finally:
        proc.terminate()
        await proc.wait()
