"""Which telemetry devices a backend runs on, and which backends a hot-plugged device touches (pure).

`devices_for_backend(hardware, gpu_index, snapshot)` rules, by the backend's `hardware`:

- "nvidia" with gpu_index N → ["nvidia:N"], whether or not the snapshot has it: a configured
  GPU without a reading is missing (stale) telemetry, not an unlinked backend.
  Without gpu_index → every "nvidia:*" in the snapshot (Ollama spreads over all GPUs).
- "igpu" → every reading of kind "igpu": amdgpu on an APU (hwmon), Intel's RAPL "uncore"
  zone, i915/xe when integrated. When none of them reports a temperature (Intel iGPUs have no
  hwmon of their own), the CPU temperature sensors (coretemp/k10temp/zenpower) are added: the
  iGPU shares their die.
- "cpu" → every reading of kind "cpu": RAPL packages ("cpu:package", "cpu:package:N"), the
  coretemp/k10temp/zenpower hwmon devices and "cpu:load".
- "npu" → every reading of kind "npu" ("npu:<PCI address>"); NPUs usually have no sensors.
- anything else → [].

`device_match` (fnmatch patterns) replaces the rules: exactly the snapshot ids that match.
gpu_index is ignored except for "nvidia". Ids come back sorted, without duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from .classify import CPU_SENSOR_DRIVERS
from .discovery import DiscoveredDevice
from .readings import Snapshot


def _natural_key(device_id: str) -> tuple:
    head, _, tail = device_id.rpartition(":")
    return (head, int(tail)) if tail.isdigit() else (device_id, -1)


def _cpu_sensors(snapshot: Snapshot) -> list[str]:
    return [d.device_id for d in snapshot.devices.values()
            if d.source == "hwmon" and d.device_id.split(":")[1] in CPU_SENSOR_DRIVERS]


def devices_for_backend(hardware: str, gpu_index: int | None, snapshot: Snapshot | None, *,
                        device_match: str | Sequence[str] | None = None) -> list[str]:
    """Device ids whose readings describe the hardware a backend runs on (rules in the module doc)."""
    devices = snapshot.devices if snapshot is not None else {}
    if device_match is not None:
        patterns = [device_match] if isinstance(device_match, str) else list(device_match)
        return sorted({i for i in devices if any(fnmatchcase(i, p) for p in patterns)}, key=_natural_key)

    def of_kind(kind: str) -> list[str]:
        return [d.device_id for d in devices.values() if d.kind == kind]

    hardware = hardware.lower()
    if hardware == "nvidia":
        ids = [f"nvidia:{gpu_index}"] if gpu_index is not None else of_kind("nvidia")
    elif hardware == "igpu":
        ids = of_kind("igpu")
        if snapshot is not None and not any(devices[i].temperature_c is not None for i in ids):
            ids += _cpu_sensors(snapshot)
    elif hardware == "cpu":
        ids = of_kind("cpu")
    elif hardware == "npu":
        ids = of_kind("npu")
    else:
        ids = []
    return sorted(set(ids), key=_natural_key)


def affected_backends(device: DiscoveredDevice, backends: Iterable[tuple[str, str, int | None]],
                      snapshot: Snapshot | None) -> list[str]:
    """Ids of the backends (id, hardware, gpu_index) that run on a hot-plugged `device`.

    A backend is affected when one of its devices has the same id as `device` (hwmon, NPU) or
    the same PCI address. An NVIDIA card whose GPU cannot be told apart (no reading with a PCI
    address) affects every NVIDIA backend: better unavailable until the next health check than
    scheduled onto a GPU that has gone.
    """
    devices = snapshot.devices if snapshot is not None else {}
    hit = []
    for backend_id, hardware, gpu_index in backends:
        ids = devices_for_backend(hardware, gpu_index, snapshot)
        if device.device_id in ids:
            hit.append(backend_id)
            continue
        buses = {devices[i].bus_id for i in ids if i in devices and devices[i].bus_id}
        if device.bus_id and device.bus_id in buses:
            hit.append(backend_id)
            continue
        if device.kind == "nvidia" and hardware.lower() == "nvidia" and not buses:
            hit.append(backend_id)
        elif device.kind == "npu" and hardware.lower() == "npu" and not ids:
            hit.append(backend_id)
        elif device.kind == "igpu" and hardware.lower() == "igpu" and device.integrated and not buses:
            hit.append(backend_id)
    return hit
