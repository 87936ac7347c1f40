"""Device discovery and hot-plug: pure classification, and pyudev against a umockdev testbed.

The umockdev tests need the Debian packages umockdev (umockdev-wrapper, libumockdev-preload),
gir1.2-umockdev-1.0 and python3-gi (the testbed is driven through GObject introspection in a
child process). Without them the tests fail, or skip loudly with OLLAMAPROXY_ALLOW_SKIP=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ollamaproxy.hardware.discovery import DeviceFacts, bus_id_from_path, classify

CHILD = Path(__file__).parent / "fixtures" / "hw" / "umockdev_child.py"
PACKAGES = "umockdev gir1.2-umockdev-1.0 python3-gi"


def unavailable(reason: str) -> None:
    if os.environ.get("OLLAMAPROXY_ALLOW_SKIP", "") == "1":
        pytest.skip(f"!!! UMOCKDEV TESTS NOT RUN: {reason} (OLLAMAPROXY_ALLOW_SKIP=1)")
    pytest.fail(f"{reason}. Install the Debian packages: apt-get install {PACKAGES} "
                "(or set OLLAMAPROXY_ALLOW_SKIP=1 to skip these tests locally)", pytrace=False)


def run_child(mode: str):
    wrapper = shutil.which("umockdev-wrapper")
    if wrapper is None:
        unavailable("umockdev-wrapper not found")
    proc = subprocess.run([wrapper, sys.executable, str(CHILD), mode], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent.parent)
    if proc.returncode == 77:
        unavailable(proc.stderr.strip())
    assert proc.returncode == 0, f"umockdev child failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout)


# ================================================================ classification (pure)


def facts(subsystem, sys_path, **kw):
    return DeviceFacts(subsystem=subsystem, sys_name=sys_path.rsplit("/", 1)[1], sys_path=sys_path, **kw)


def test_cards_connectors_and_render_nodes():
    card = classify(facts("drm", "/sys/devices/pci0000:00/0000:00:02.0/drm/card1",
                          pci_vendor="8086", pci_driver="xe", pci_bus_id="0000:00:02.0",
                          upstream_bus_id="pci0000:00"))
    assert (card.device_id, card.kind, card.integrated, card.driver, card.vendor_id) == \
        ("drm:0000:00:02.0", "igpu", True, "xe", "8086")
    assert classify(facts("drm", "/sys/devices/pci0000:00/0000:00:02.0/drm/card1/card1-HDMI-A-1")) is None
    assert classify(facts("drm", "/sys/devices/pci0000:00/0000:00:02.0/drm/renderD128")) is None


def test_removed_device_keeps_its_pci_address_from_the_path():
    path = "/sys/devices/pci0000:00/0000:00:07.0/0000:3c:00.0/drm/card2"
    assert bus_id_from_path(path) == "0000:3c:00.0"
    gone = classify(facts("drm", path))  # attributes unreadable after removal
    assert gone.device_id == "drm:0000:3c:00.0" and gone.bus_id == "0000:3c:00.0" and gone.kind == "other"
    assert bus_id_from_path("/sys/devices/platform/simple-framebuffer.0/drm/card0") is None


def test_npus_hwmon_and_supplies():
    npu = classify(facts("accel", "/sys/devices/pci0000:00/0000:00:0b.0/accel/accel0",
                         pci_vendor="8086", pci_driver="intel_vpu", pci_bus_id="0000:00:0b.0"))
    assert (npu.device_id, npu.kind) == ("npu:0000:00:0b.0", "npu")
    habana = classify(facts("accel", "/sys/devices/pci0000:00/0000:00:01.0/0000:1a:00.0/accel/accel0",
                            pci_vendor="1da3", pci_driver="habanalabs"))
    assert habana.kind == "other"
    nvme = classify(facts("hwmon", "/sys/devices/pci0000:00/0000:00:06.0/0000:02:00.0/nvme/nvme0/hwmon1",
                          hwmon_name="nvme", parent_name="nvme0", pci_driver="nvme", pci_vendor="144d"))
    assert (nvme.device_id, nvme.kind) == ("hwmon:nvme:nvme0", "nvme")
    assert classify(facts("hwmon", "/sys/devices/virtual/hwmon/hwmon9")) is None  # no name: not ours
    assert classify(facts("power_supply", "/sys/x/power_supply/BAT1", supply_type="Battery")).kind == "battery"
    assert classify(facts("power_supply", "/sys/x/power_supply/ucsi-source-psy-USBC000:001",
                          supply_type="USB")).kind == "mains"
    assert classify(facts("power_supply", "/sys/x/power_supply/hid-battery", supply_type="Battery",
                          supply_scope="Device")).kind == "other"
    assert classify(facts("usb", "/sys/devices/usb1")) is None


# ================================================================ pyudev on a umockdev testbed


def test_discover_classifies_a_testbed_machine():
    devices = {d["device_id"]: d for d in run_child("discover")}
    assert set(devices) == {
        "drm:0000:00:02.0", "drm:0000:c4:00.0", "drm:0000:03:00.0", "npu:0000:00:0b.0",
        "hwmon:amdgpu:0000:c4:00.0", "hwmon:coretemp:coretemp.0", "hwmon:k10temp:0000:00:18.3",
        "power_supply:AC", "power_supply:BAT0", "power_supply:hidpp_battery_0",
    }  # connector and render node are not devices of ours
    intel = devices["drm:0000:00:02.0"]
    assert (intel["kind"], intel["driver"], intel["vendor_id"], intel["integrated"]) == ("igpu", "i915", "8086", True)
    apu = devices["drm:0000:c4:00.0"]
    assert (apu["kind"], apu["integrated"], apu["bus_id"]) == ("igpu", True, "0000:c4:00.0")
    assert devices["drm:0000:03:00.0"]["kind"] == "dgpu"
    assert devices["npu:0000:00:0b.0"]["driver"] == "intel_vpu"
    assert devices["hwmon:amdgpu:0000:c4:00.0"]["kind"] == "igpu"
    assert devices["hwmon:coretemp:coretemp.0"]["kind"] == "cpu"
    assert devices["power_supply:BAT0"]["kind"] == "battery"
    assert devices["power_supply:AC"]["kind"] == "mains"
    assert devices["power_supply:hidpp_battery_0"]["kind"] == "other"
    assert all(d["sys_path"].startswith("/sys/devices/") for d in devices.values())


def test_hotplug_watcher_reports_an_egpu_leaving_at_once():
    events = run_child("hotplug")
    summary = [(e["action"], e["device_id"], e["kind"]) for e in events]
    assert ("add", "drm:0000:3c:00.0", "nvidia") in summary
    assert ("remove", "drm:0000:3c:00.0", "nvidia") in summary    # remembered from its add
    assert ("remove", "npu:0000:00:0b.0", "npu") in summary       # remembered from discovery at start
    assert ("change", "power_supply:BAT0", "battery") in summary
    removed = next(e for e in events if e["action"] == "remove" and e["kind"] == "nvidia")
    assert (removed["driver"], removed["bus_id"], removed["vendor_id"]) == ("nvidia", "0000:3c:00.0", "10de")
    assert summary.index(("add", "drm:0000:3c:00.0", "nvidia")) < summary.index(("remove", "drm:0000:3c:00.0", "nvidia"))
