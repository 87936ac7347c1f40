"""NVIDIA GPUs through `nvidia-smi --query-gpu` CSV, the fallback when NVML cannot be loaded; hard timeout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from .nvml import device_id
from .readings import DeviceReading
from .source import ProbeResult, SourceError
from .sysfs import normalise_bus_id
from .throttle import decode_throttle_reasons

# Older drivers know only the "throttle" spelling; newer ones add "event" and keep the old one.
THROTTLE_FIELDS = ("clocks_throttle_reasons.active", "clocks_event_reasons.active")
BASE_FIELDS = ("index", "name", "pci.bus_id", "power.draw", "enforced.power.limit", "temperature.gpu",
               "fan.speed", "utilization.gpu", "memory.used", "memory.total")
MIB = 1024 * 1024


def parse_csv(text: str, now: float, source: str = "nvidia-smi") -> list[DeviceReading]:
    """Readings from `--format=csv,noheader,nounits` lines of BASE_FIELDS + one throttle field."""
    readings = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        expected = len(BASE_FIELDS) + 1
        if len(cells) > expected:  # a GPU name with a comma in it
            extra = len(cells) - expected
            cells = [cells[0], ", ".join(cells[1:2 + extra])] + cells[2 + extra:]
        if len(cells) != expected:
            raise SourceError(f"nvidia-smi line {line_no}: {len(cells)} fields, expected {expected}: {line!r}")
        index, name, bus, power, limit, temp, fan, util, used, total, mask = cells
        try:
            gpu = int(index)
            reasons, throttling = ((), False)
            if not _missing(mask):
                reasons, throttling = decode_throttle_reasons(int(mask, 16))
            used_mib, total_mib = _number(used), _number(total)
            readings.append(DeviceReading(
                device_id=device_id(gpu),
                kind="nvidia",
                source=source,
                taken_at=now,
                label=name,
                power_w=_number(power),
                power_limit_w=_number(limit),
                temperature_c=_number(temp),
                fan_percent=_number(fan),
                utilisation_percent=_number(util),
                memory_used_bytes=int(used_mib * MIB) if used_mib is not None else None,
                memory_total_bytes=int(total_mib * MIB) if total_mib is not None else None,
                throttle_reasons=reasons,
                throttling=throttling,
                bus_id=normalise_bus_id(bus),
            ))
        except ValueError as exc:
            raise SourceError(f"nvidia-smi line {line_no}: {exc}: {line!r}") from exc
    return readings


def _missing(cell: str) -> bool:
    """"[N/A]", "[Not Supported]", "[Unknown Error]" and empty cells carry no value."""
    return cell.startswith("[") or cell in ("", "N/A")


def _number(cell: str) -> float | None:
    return None if _missing(cell) else float(cell)


class NvidiaSmiSource:
    """Runs nvidia-smi once per read for all GPUs; a hang is killed at `timeout` and reported."""

    name = "nvidia-smi"
    category = "nvidia"

    def __init__(self, executable: str = "nvidia-smi", *, timeout: float = 1.5):
        self.executable = executable
        self.timeout = timeout
        self.detail = ""
        self._throttle_field = THROTTLE_FIELDS[0]

    def _resolve(self) -> str | None:
        if os.sep in self.executable:
            return self.executable if os.access(self.executable, os.X_OK) else None
        return shutil.which(self.executable)

    def probe(self) -> ProbeResult:
        path = self._resolve()
        if path is None:
            self.detail = f"{self.executable} not found"
            return ProbeResult.FAIL
        self.detail = f"using {path}"
        return ProbeResult.OK

    def read(self, now: float) -> list[DeviceReading]:
        path = self._resolve()
        if path is None:
            raise SourceError(f"{self.executable} not found")
        code, out, err = self._run(path, self._throttle_field)
        if code != 0 and "not a valid field" in (out + err) and self._throttle_field == THROTTLE_FIELDS[0]:
            self._throttle_field = THROTTLE_FIELDS[1]
            code, out, err = self._run(path, self._throttle_field)
        if code != 0:
            message = (err.strip() or out.strip() or "no output").splitlines()[0]
            raise SourceError(f"nvidia-smi exited {code}: {message}")
        return parse_csv(out, now, self.name)

    def _run(self, path: str, throttle_field: str) -> tuple[int, str, str]:
        fields = ",".join(BASE_FIELDS + (throttle_field,))
        args = [path, f"--query-gpu={fields}", "--format=csv,noheader,nounits"]
        # Own process group: on timeout the whole group dies, so a helper it forked cannot
        # keep our pipes open and stall us after the kill.
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            raise SourceError(f"nvidia-smi gave no answer within {self.timeout:g}s (killed)") from None
        return proc.returncode, out, err
