"""CPU utilisation through psutil (it already does the job), as the reading "cpu:load"."""

from __future__ import annotations

from .readings import DeviceReading
from .source import ProbeResult, SourceError

DEVICE_ID = "cpu:load"


class CpuLoadSource:
    """psutil.cpu_percent between two reads; the first read has no figure yet (None, not 0)."""

    name = "psutil"
    category = "cpu-load"

    def __init__(self) -> None:
        self.detail = ""
        self._psutil = None
        self._primed = False

    def probe(self) -> ProbeResult:
        try:
            import psutil
        except ImportError as exc:
            self.detail = f"psutil not installed: {exc}"
            return ProbeResult.FAIL
        self._psutil = psutil
        self.detail = "psutil.cpu_percent"
        return ProbeResult.OK

    def read(self, now: float) -> list[DeviceReading]:
        if self._psutil is None:
            raise SourceError("psutil is not loaded (probe did not succeed)")
        percent = self._psutil.cpu_percent(interval=None)
        primed, self._primed = self._primed, True
        return [DeviceReading(DEVICE_ID, "cpu", self.name, now, label="CPU load",
                              utilisation_percent=float(percent) if primed else None)]
