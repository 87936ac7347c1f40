"""`ollamaproxy demo` as a newcomer runs it: real text from llama.cpp through the Ollama API, clean Ctrl-C."""

import os
import signal
import socket
import subprocess
import sys

import ollama
import pytest

from conftest import wait_for_http
from llamacpp_server import DEFAULT_ALIAS, model_path


def _free_ports(count: int) -> list[int]:
    """`count` consecutive free ports (the demo takes a base port for its four backends)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sockets.append(sock)
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port range")


def _start_demo(*extra):
    router_port, *_ = _free_ports(1)
    sim_base = _free_ports(4)[0]
    env = dict(os.environ, OLLAMAPROXY_MODEL_DIR=str(model_path().parent))
    proc = subprocess.Popen([sys.executable, "-m", "ollamaproxy", "demo", "--port", str(router_port),
                             "--sim-base-port", str(sim_base), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    return proc, f"http://127.0.0.1:{router_port}"


def _stop(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    return out, err


@pytest.mark.llamacpp
async def test_demo_answers_with_real_text_from_llamacpp():
    proc, url = _start_demo()
    try:
        await wait_for_http(url + "/", timeout=120)
        client = ollama.AsyncClient(host=url)
        reply = await client.chat(model=DEFAULT_ALIAS, options={"num_predict": 12, "temperature": 0},
                                  messages=[{"role": "user", "content": "Name a colour."}])
        assert reply.done and len(reply.message.content.strip()) > 0
        simulated = await client.chat(model="llama3.2:1b", messages=[{"role": "user", "content": "hi"}],
                                      options={"num_predict": 3})
        assert simulated.done
    finally:
        out, _err = _stop(proc)
    assert "real llama.cpp (SmolLM2-135M)" in out and "curl" in out and "demo stopped" in out


async def test_demo_without_real_cpu_is_all_simulated():
    proc, url = _start_demo("--no-real-cpu")
    try:
        await wait_for_http(url + "/")
        client = ollama.AsyncClient(host=url)
        names = sorted(m.model for m in (await client.list()).models)
        assert "llama3.1:8b" in names and DEFAULT_ALIAS not in names
        reply = await client.generate(model="llama3.2:1b", prompt="x", options={"num_predict": 3})
        assert reply.done
    finally:
        out, _ = _stop(proc)
    assert "cpu0 is simulated: --no-real-cpu" in out
