"""Hardware telemetry: probed sources (NVML, nvidia-smi, hwmon, RAPL, battery, NPU, psutil), the sampler, discovery."""

from .discovery import DiscoveredDevice, HotplugWatcher, discover
from .linking import affected_backends, devices_for_backend
from .readings import BatteryReading, DeviceReading, Snapshot
from .sampler import Sampler, default_sources
from .source import ProbeResult, SourceError, TelemetrySource

__all__ = [
    "BatteryReading", "DeviceReading", "DiscoveredDevice", "HotplugWatcher", "ProbeResult", "Sampler",
    "Snapshot", "SourceError", "TelemetrySource", "affected_backends", "default_sources",
    "devices_for_backend", "discover",
]
