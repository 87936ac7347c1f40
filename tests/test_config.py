"""Config validation: every error names the key, the value and what is allowed."""

import subprocess
import sys
import textwrap

import pytest

from ollamaproxy.config import ConfigError, default_config, load_config, parse_config, parse_host_port


def _write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
[server]
listen = "127.0.0.1:11434"

[[backends]]
id = "nvidia0"
kind = "ollama"
url = "http://127.0.0.1:11435/"
hardware = "nvidia"
gpu_index = 0
max_concurrent = 2
power_watts = 250
latency_ms = 150
models = ["qwen3*"]
cancel_on_disconnect = false

[[backends]]
id = "cpu-llamacpp"
kind = "openai"
url = "http://127.0.0.1:8080"

[security]
blocked_endpoints = ["/api/pull", "/api/blobs/*"]
"""


def test_good_config_loads_with_defaults_filled(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    nvidia = config.backend("nvidia0")
    assert nvidia.url == "http://127.0.0.1:11435"  # trailing slash dropped
    assert nvidia.models == ["qwen3*"] and nvidia.cancel_on_disconnect is False
    cpu = config.backend("cpu-llamacpp")
    assert cpu.kind == "openai" and cpu.max_concurrent == 1 and cpu.cancel_on_disconnect is True
    assert config.queue.max_depth == 512


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ('[[backends]]\nid="a"\nurl="http://x:1"\nkind="vllm"', ["backends[0 id='a'].kind = 'vllm'", "'ollama' or 'openai'"]),
        ('[[backends]]\nid="a"\nurl="http://x:1"\nhardware="tpu"', ["hardware = 'tpu'", "'npu'", "'cpu'"]),
        ('[[backends]]\nid="a"\nurl="http://x:1"\nmax_concurrent=0', ["max_concurrent = 0", "greater than or equal to 1"]),
        ('[[backends]]\nid="a"\nurl="ftp://x"', ["url = 'ftp://x'", "http://"]),
        ('[[backends]]\nid="a"\nurl="http://x:1"\ncolour="red"', ["backends[0 id='a'].colour: unknown key", "allowed keys here: id, kind, url"]),
        ('[srever]\nlisten="x"\n[[backends]]\nid="a"\nurl="http://x:1"', ["srever: unknown key", "allowed keys here: server, backends"]),
        ('[server]\nlisten="localhost"\n[[backends]]\nid="a"\nurl="http://x:1"', ["server.listen = 'localhost'", "HOST:PORT"]),
        ('[[backends]]\nurl="http://x:1"', ["backends[0].id: required key is missing"]),
        ('[[backends]]\nid="a"\nurl="http://x:1"\n[[backends]]\nid="a"\nurl="http://y:1"', ["'a' is used twice"]),
        ('[server]\nlisten="127.0.0.1:1"', ["at least one [[backends]]"]),
        ('[security]\nblocked_endpoints=["api/pull"]\n[[backends]]\nid="a"\nurl="http://x:1"', ["must start with '/'"]),
    ],
)
def test_bad_values_name_key_value_and_allowed(tmp_path, snippet, expected):
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, snippet))
    text = "\n".join(caught.value.problems)
    for fragment in expected:
        assert fragment in text, text


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "absent.toml")


def test_default_config_is_one_local_ollama():
    config = default_config()
    assert config.server.listen == "127.0.0.1:11434"
    assert [(b.kind, b.url) for b in config.backends] == [("ollama", "http://127.0.0.1:11435")]


def test_parse_host_port_forms():
    assert parse_host_port("127.0.0.1:11434") == ("127.0.0.1", 11434)
    assert parse_host_port("[::1]:80") == ("::1", 80)
    for bad in ("127.0.0.1", ":80", "host:0", "host:99999", "host:x"):
        with pytest.raises(ValueError):
            parse_host_port(bad)


def test_check_config_cli_prints_problems_and_exits_nonzero(tmp_path):
    bad = _write(tmp_path, '[[backends]]\nid="a"\nurl="http://x:1"\nkind="vllm"\nspeed=3\n')
    run = subprocess.run([sys.executable, "-m", "ollamaproxy", "check-config", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert "kind = 'vllm'" in run.stderr and "speed: unknown key" in run.stderr
    good = _write(tmp_path, GOOD)
    run = subprocess.run([sys.executable, "-m", "ollamaproxy", "check-config", str(good)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout and "nvidia0" in run.stdout


def test_parse_config_without_file_source_label():
    with pytest.raises(ConfigError) as caught:
        parse_config({"backends": []}, "inline")
    assert str(caught.value).startswith("inline: ")
