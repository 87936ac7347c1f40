"""The protocol every telemetry source implements: a cheap three-answer probe and a synchronous read.

Modelled on power-profiles-daemon's drivers. A source is one module per hardware interface
(`nvml`, `nvidia_smi`, `hwmon`, `powercap`, `battery`, `cpuload`, `accel`). The sampler keeps an
ordered list of them; sources that share a `category` are alternatives, and the first whose
probe says OK serves that category (NVML before nvidia-smi).

- `probe()` answers OK (use me), FAIL (this hardware/interface is not here; do not ask again)
  or DEFER (not usable now, may become usable: ask again next round). It may load a library
  or touch sysfs, and sets `detail` to a one-line reason for logs.
- `read(now)` returns readings stamped `now`; it raises on a failure of the whole source.
  A failure confined to one device is that device's reading with `error` set.
- `close()` (optional) releases what probe acquired.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .readings import Reading


class ProbeResult(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    DEFER = "defer"


class SourceError(RuntimeError):
    """A source could not produce readings this round; the message says why, for source_errors."""


@runtime_checkable
class TelemetrySource(Protocol):
    name: str
    category: str
    detail: str

    def probe(self) -> ProbeResult: ...

    def read(self, now: float) -> Sequence[Reading]: ...
