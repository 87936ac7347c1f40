"""NVIDIA GPUs through NVML (`nvidia-ml-py`, imported as `pynvml`): power, limit, heat, fan, load, memory, throttling."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .readings import DeviceReading
from .source import ProbeResult, SourceError
from .sysfs import normalise_bus_id
from .throttle import decode_throttle_reasons


def device_id(index: int) -> str:
    """The id of NVML GPU `index`, shared with the nvidia-smi fallback."""
    return f"nvidia:{index}"


class NvmlSource:
    """Reads every GPU NVML sees; a GPU whose query fails is one reading with `error` set.

    A field the GPU does not support (no fan on a data-centre card) is None; any other NVML
    error on a GPU fails that GPU's reading this round. All pynvml functions are looked up on
    the module at call time, so tests replace them at the `pynvml` boundary.
    """

    name = "nvml"
    category = "nvidia"

    def __init__(self) -> None:
        self.detail = ""
        self._nvml: Any = None

    # ---- probe ------------------------------------------------------------------------

    def probe(self) -> ProbeResult:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError as exc:
            self.detail = f"pynvml not installed: {exc}"
            return ProbeResult.FAIL
        if self._nvml is None:  # a deferred probe asks again without a second init
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:
                self.detail = f"nvmlInit failed: {_text(exc)}"
                return ProbeResult.FAIL
            self._nvml = nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self.detail = f"nvmlDeviceGetCount failed: {_text(exc)}"
            return ProbeResult.DEFER
        if count == 0:
            self.detail = "NVML has no GPU (yet)"
            return ProbeResult.DEFER
        self.detail = f"NVML sees {count} GPU(s)"
        return ProbeResult.OK

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting down what may already be gone
                pass
            self._nvml = None

    # ---- read -------------------------------------------------------------------------

    def read(self, now: float) -> list[DeviceReading]:
        nvml = self._nvml
        if nvml is None:
            raise SourceError("NVML is not initialised (probe did not succeed)")
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            raise SourceError(f"nvmlDeviceGetCount failed: {_text(exc)}") from exc
        return [self._read_gpu(nvml, index, now) for index in range(count)]

    def _read_gpu(self, nvml: Any, index: int, now: float) -> DeviceReading:
        ident = device_id(index)
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            optional = _Optional(nvml)
            name = optional(nvml.nvmlDeviceGetName, handle)
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            power_mw = optional(nvml.nvmlDeviceGetPowerUsage, handle)
            limit_mw = optional(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            temperature = optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            fan = optional(nvml.nvmlDeviceGetFanSpeed, handle)
            rates = optional(nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = optional(nvml.nvmlDeviceGetMemoryInfo, handle)
            reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
                or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
            mask = optional(reasons_fn, handle)
        except nvml.NVMLError as exc:
            return DeviceReading(ident, "nvidia", self.name, now, label=ident,
                                 error=f"NVML: {_text(exc)}")
        reasons, throttling = decode_throttle_reasons(mask) if mask is not None else ((), False)
        return DeviceReading(
            device_id=ident,
            kind="nvidia",
            source=self.name,
            taken_at=now,
            label=name or ident,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            power_limit_w=limit_mw / 1000.0 if limit_mw is not None else None,
            temperature_c=float(temperature) if temperature is not None else None,
            fan_percent=float(fan) if fan is not None else None,
            utilisation_percent=float(rates.gpu) if rates is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            throttle_reasons=reasons,
            throttling=throttling,
            bus_id=_bus_id(nvml, handle),
        )


class _Optional:
    """Call an NVML function; "not supported" means the GPU lacks the field → None."""

    def __init__(self, nvml: Any):
        self._not_supported = nvml.NVMLError_NotSupported

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self._not_supported:
            return None


def _bus_id(nvml: Any, handle: Any) -> str | None:
    """PCI address for linking to discovered devices; best effort (None when NVML cannot say)."""
    try:
        info = nvml.nvmlDeviceGetPciInfo(handle)
    except Exception:  # optional link data: the reading stands without it
        return None
    bus = getattr(info, "busId", None)
    if isinstance(bus, bytes):
        bus = bus.decode(errors="replace")
    return normalise_bus_id(bus)


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
