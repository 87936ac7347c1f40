"""nvidia-smi fallback against fake executables: multi-GPU CSV, a failing one, a hanging one, field spellings."""

from __future__ import annotations

import os

import pytest

from ollamaproxy.hardware.nvidia_smi import NvidiaSmiSource, parse_csv
from ollamaproxy.hardware.sampler import Sampler
from ollamaproxy.hardware.source import ProbeResult, SourceError

MIB = 1024 * 1024

TWO_GPUS = """\
0, NVIDIA GeForce RTX 4090, 00000000:01:00.0, 287.41, 450.00, 71, 55, 99, 21012, 24564, 0x0000000000000004
1, NVIDIA RTX A2000 12GB, 00000000:3C:00.0, 11.52, 70.00, 38, [N/A], 0, 5, 12282, 0x0000000000000001
"""


def fake_smi(tmp_path, body: str, name: str = "nvidia-smi"):
    """Write an executable shell script standing in for nvidia-smi; it logs its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/args.log"\n{body}\n')
    path.chmod(0o755)
    return path


def test_multi_gpu_csv_on_path(tmp_path, monkeypatch):
    fake_smi(tmp_path, f"cat <<'EOF'\n{TWO_GPUS}EOF")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    source = NvidiaSmiSource(timeout=10.0)  # found on PATH
    assert source.probe() is ProbeResult.OK
    gpu0, gpu1 = source.read(now=7.0)

    assert (gpu0.device_id, gpu0.source, gpu0.taken_at, gpu0.label) == \
        ("nvidia:0", "nvidia-smi", 7.0, "NVIDIA GeForce RTX 4090")
    assert (gpu0.power_w, gpu0.power_limit_w, gpu0.temperature_c, gpu0.fan_percent) == (287.41, 450.0, 71.0, 55.0)
    assert (gpu0.utilisation_percent, gpu0.memory_used_bytes, gpu0.memory_total_bytes) == \
        (99.0, 21012 * MIB, 24564 * MIB)
    assert gpu0.throttle_reasons == ("sw_power_cap",) and gpu0.throttling
    assert gpu0.bus_id == "0000:01:00.0"

    assert gpu1.device_id == "nvidia:1" and gpu1.fan_percent is None  # [N/A]: unknown, not 0
    assert gpu1.throttle_reasons == ("gpu_idle",) and not gpu1.throttling
    assert gpu1.bus_id == "0000:3c:00.0"

    args = (tmp_path / "args.log").read_text()
    assert "--format=csv,noheader,nounits" in args
    assert "--query-gpu=index,name,pci.bus_id,power.draw,enforced.power.limit," in args


def test_failing_nvidia_smi_says_why(tmp_path):
    smi = fake_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it couldn'\"'\"'t communicate with the NVIDIA driver.'"
                             "\nexit 9")
    source = NvidiaSmiSource(str(smi), timeout=10.0)
    assert source.probe() is ProbeResult.OK
    with pytest.raises(SourceError, match=r"nvidia-smi exited 9: NVIDIA-SMI has failed because"):
        source.read(now=0.0)


def test_hanging_nvidia_smi_is_killed_at_its_timeout(tmp_path):
    # The sleep is a child holding stdout open: killing only the script would leave us waiting on it.
    smi = fake_smi(tmp_path, "sleep 60\necho late")
    source = NvidiaSmiSource(str(smi), timeout=0.3)
    with pytest.raises(SourceError, match=r"nvidia-smi gave no answer within 0.3s \(killed\)"):
        source.read(now=0.0)


async def test_sampler_reports_failure_and_hang_as_source_errors(tmp_path):
    failing = fake_smi(tmp_path, "echo 'No devices were found' >&2\nexit 9", name="smi-fail")
    hanging = fake_smi(tmp_path, "sleep 60", name="smi-hang")
    for smi, timeout, expected in ((failing, 10.0, "nvidia-smi exited 9: No devices were found"),
                                   (hanging, 0.3, "gave no answer within 0.3s")):
        sampler = Sampler([NvidiaSmiSource(str(smi), timeout=timeout)], read_timeout=20.0)
        try:
            snapshot = await sampler.sample_once()
        finally:
            sampler.close()
        assert expected in snapshot.source_errors["nvidia-smi"]
        assert snapshot.devices == {}


def test_older_field_spelling_is_retried_with_the_newer_one(tmp_path):
    smi = fake_smi(tmp_path, """case "$1" in
  *clocks_throttle_reasons*) echo 'Field "clocks_throttle_reasons.active" is not a valid field to query.'; exit 2;;
esac
echo '0, NVIDIA B200, 00000000:18:00.0, 140.0, 1000.0, 35, [N/A], 0, 1, 183359, 0x0000000000000001'""")
    source = NvidiaSmiSource(str(smi), timeout=10.0)
    [gpu] = source.read(now=0.0)
    assert gpu.label == "NVIDIA B200" and gpu.fan_percent is None and not gpu.throttling
    [gpu] = source.read(now=1.0)  # remembers the spelling that works
    assert "clocks_event_reasons.active" in (tmp_path / "args.log").read_text().splitlines()[-1]


def test_missing_nvidia_smi_fails_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert NvidiaSmiSource().probe() is ProbeResult.FAIL
    assert NvidiaSmiSource(str(tmp_path / "nope")).probe() is ProbeResult.FAIL


def test_parse_csv_rejects_malformed_lines():
    with pytest.raises(SourceError, match="line 1"):
        parse_csv("0, only, three\n", now=0.0)
    with pytest.raises(SourceError, match="line 1"):
        parse_csv("x, GPU, 00000000:01:00.0, 1, 2, 3, 4, 5, 6, 7, 0x0\n", now=0.0)


def test_parse_csv_keeps_a_comma_in_the_gpu_name():
    [gpu] = parse_csv("0, NVIDIA Foo, Rev 2, 00000000:01:00.0, 1.5, 2, 3, 4, 5, 6, 7, 0x0\n", now=0.0)
    assert gpu.label == "NVIDIA Foo, Rev 2" and gpu.power_w == 1.5 and gpu.bus_id == "0000:01:00.0"
