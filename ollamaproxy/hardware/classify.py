"""Pure rules that name a device's kind from its vendor, driver and PCI place (shared by sources and discovery).

GPU kind (`gpu_kind`), in order:

1. NVIDIA (vendor 10de, driver `nvidia` or `nouveau`) → "nvidia" (always discrete; Tegra is not PCI).
2. Intel (8086) with `i915` or `xe`: on PCI bus 00 → "igpu" (the iGPU is 00:02.0);
   anywhere else → "dgpu" (Arc cards sit behind a PCIe switch on another bus).
3. AMD (1002) with `amdgpu` or `radeon`: behind bus 00 device 08 (the "internal GPP bridge",
   00:08.x, through which every Zen APU attaches its GPU) → "igpu"; otherwise "dgpu".
   amdgpu has no sysfs flag for "APU", and VRAM size cannot tell (an APU may carve out
   96 GiB), so topology decides; a backend can still name its device explicitly.
4. Anything else → "dgpu" when it is a GPU driver, else "other".

hwmon drivers map to kinds by name (`HWMON_KINDS`); GPU drivers among them take the GPU kind of
the PCI device they sit on. Never by position: not "card0", not "the first thermal zone".
"""

from __future__ import annotations

VENDOR_INTEL = "8086"
VENDOR_AMD = "1002"
VENDOR_NVIDIA = "10de"

GPU_DRIVERS = frozenset({"i915", "xe", "amdgpu", "radeon", "nouveau", "nvidia"})
NPU_DRIVERS = frozenset({"intel_vpu", "amdxdna"})
CPU_SENSOR_DRIVERS = frozenset({"coretemp", "k10temp", "zenpower"})

HWMON_KINDS = {
    "coretemp": "cpu",
    "k10temp": "cpu",
    "zenpower": "cpu",
    "nvme": "nvme",
    "drivetemp": "nvme",
}

APU_BRIDGE_DEVICE = 0x08


def vendor_hex(text: str | None) -> str | None:
    """"0x8086\\n" → "8086"; None stays None."""
    if not text:
        return None
    text = text.strip().lower()
    return text[2:] if text.startswith("0x") else text


def _bus(bus_id: str | None) -> int | None:
    if not bus_id:
        return None
    parts = bus_id.split(":")
    if len(parts) != 3:
        return None
    try:
        return int(parts[1], 16)
    except ValueError:
        return None


def _slot(bus_id: str | None) -> int | None:
    if not bus_id:
        return None
    try:
        return int(bus_id.rsplit(":", 1)[1].split(".")[0], 16)
    except (IndexError, ValueError):
        return None


def is_integrated_gpu(vendor_id: str | None, driver: str | None, bus_id: str | None,
                      upstream_bus_id: str | None = None) -> bool:
    """True for a GPU that shares the CPU package (rules 2 and 3 above)."""
    if vendor_id == VENDOR_INTEL and driver in ("i915", "xe"):
        return _bus(bus_id) == 0
    if vendor_id == VENDOR_AMD and driver in ("amdgpu", "radeon"):
        return _bus(upstream_bus_id) == 0 and _slot(upstream_bus_id) == APU_BRIDGE_DEVICE
    return False


def gpu_kind(vendor_id: str | None, driver: str | None, bus_id: str | None,
             upstream_bus_id: str | None = None) -> str:
    """"nvidia", "igpu", "dgpu" or "other" for a DRM/PCI display device."""
    if vendor_id == VENDOR_NVIDIA or driver in ("nvidia", "nouveau"):
        return "nvidia"
    if is_integrated_gpu(vendor_id, driver, bus_id, upstream_bus_id):
        return "igpu"
    if driver in GPU_DRIVERS:
        return "dgpu"
    return "other"


def hwmon_kind(name: str, pci_kind: str | None) -> str:
    """Kind of an hwmon device named `name`; GPU drivers take `pci_kind` (from gpu_kind)."""
    if name in GPU_DRIVERS:
        return pci_kind if pci_kind in ("igpu", "dgpu", "nvidia") else "dgpu"
    return HWMON_KINDS.get(name, "other")
