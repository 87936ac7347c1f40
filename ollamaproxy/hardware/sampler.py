"""The telemetry sampler: runs the probed sources off the event loop with a timeout and publishes snapshots.

How a round works (`Sampler.sample_once`):

- Sources are grouped by `category` in list order (a source without one is its own category).
  In each category the first source whose probe says OK is read; a FAIL is never asked again
  (until `reprobe()`), a DEFER is asked again next round, before any later source is used. So
  `default_sources()` reads nvidia-smi only while NVML fails or defers.
- Each category's probe and read run in that category's own worker thread; the round waits at
  most `read_timeout` for all of them together. A source that raises or does not answer in time
  is named in `source_errors` and contributes no devices: never a stale or default value.
- A worker that is still stuck in an earlier call is not waited on again: its category is
  skipped and reported "still hanging" until the call returns, and its late result is dropped.
  Workers are daemon threads (not `asyncio.to_thread`'s pool), so a call hung for ever inside
  a driver cannot block the executor's shutdown or the process exit.
- `cpu_seconds` adds the thread CPU time of every probe/read and of the round's own work on the
  loop; `samples` counts rounds. Together they give the sampler's own cost.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .accel import AccelSource
from .battery import BatterySource
from .cpuload import CpuLoadSource
from .hwmon import HwmonSource
from .nvidia_smi import NvidiaSmiSource
from .nvml import NvmlSource
from .powercap import PowercapSource
from .readings import BatteryReading, DeviceReading, Reading, Snapshot
from .source import ProbeResult, TelemetrySource

log = logging.getLogger(__name__)


def default_sources(sysfs_root: str = "/sys", *, nvidia_smi: str = "nvidia-smi",
                    nvidia_smi_timeout: float = 1.5) -> list[TelemetrySource]:
    """The ordered source list: NVML, then nvidia-smi (same category: fallback only), then sysfs and psutil."""
    return [
        NvmlSource(),
        NvidiaSmiSource(nvidia_smi, timeout=nvidia_smi_timeout),
        HwmonSource(sysfs_root),
        PowercapSource(sysfs_root),
        BatterySource(sysfs_root),
        AccelSource(sysfs_root),
        CpuLoadSource(),
    ]


@dataclass
class _Outcome:
    source: str | None
    readings: Sequence[Reading] = ()
    error: str | None = None


class _Worker:
    """One daemon thread that runs one job at a time and resolves an asyncio future with the outcome."""

    def __init__(self, name: str, cpu: Callable[[float], None]):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._cpu = cpu
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], _Outcome]) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._jobs.put((job, future))
        return future

    def stop(self) -> None:
        self._jobs.put(None)

    def _loop(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, future = item
            started = time.thread_time()
            try:
                outcome = job()
            finally:
                self._cpu(time.thread_time() - started)
            try:
                future.get_loop().call_soon_threadsafe(_resolve, future, outcome)
            except RuntimeError:  # the loop closed while we were stuck: nobody is waiting
                pass


def _resolve(future: asyncio.Future, outcome: _Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


class _Category:
    def __init__(self, name: str, sources: list[TelemetrySource]):
        self.name = name
        self.sources = sources
        self.worker: _Worker | None = None
        self.pending: asyncio.Future | None = None
        self.pending_since = 0.0
        self.running = sources[0].name  # which source the worker is in (set by the worker)
        self.step = "read"


class Sampler:
    """Samples `sources` every `interval` seconds into immutable `Snapshot`s (see module docstring)."""

    def __init__(self, sources: Iterable[TelemetrySource], *, interval: float = 1.0, read_timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_snapshot: Callable[[Snapshot], None] | None = None):
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        if read_timeout <= 0:
            raise ValueError(f"read_timeout must be > 0 seconds, got {read_timeout}")
        self.sources = list(sources)
        self.interval = interval
        self.read_timeout = read_timeout
        self.clock = clock
        self.on_snapshot = on_snapshot
        self.latest: Snapshot | None = None
        self.samples = 0
        self.cpu_seconds = 0.0
        self.probe_results: dict[str, ProbeResult] = {}
        self.active: dict[str, str | None] = {}  # category -> source read last round (None: none usable)
        self._cpu_lock = threading.Lock()
        self._round = asyncio.Lock()
        self._categories: dict[str, _Category] = {}
        for source in self.sources:
            category = getattr(source, "category", None) or source.name
            if category in self._categories:
                self._categories[category].sources.append(source)
            else:
                self._categories[category] = _Category(category, [source])

    # ---- one round --------------------------------------------------------------------

    async def sample_once(self) -> Snapshot:
        """Probe/read every category once, at most `read_timeout` seconds; publish and return the snapshot.

        Rounds never overlap: a call made while another runs waits for it, then takes its own.
        """
        async with self._round:
            return await self._sample()

    async def _sample(self) -> Snapshot:
        cpu_started = time.thread_time()
        started = self.clock()
        errors: dict[str, str] = {}
        waiting: dict[str, asyncio.Future] = {}
        for category in self._categories.values():
            if category.pending is not None:
                errors[category.running] = (
                    f"still hanging: its {category.step} has not returned for "
                    f"{max(0.0, started - category.pending_since):.1f}s")
                continue
            if all(self.probe_results.get(s.name) is ProbeResult.FAIL for s in category.sources):
                self.active[category.name] = None  # nothing there to ask (until reprobe)
                continue
            if category.worker is None:
                category.worker = _Worker(f"telemetry-{category.name}", self._add_cpu)
            category.pending = category.worker.submit(lambda c=category: self._run_category(c))
            category.pending_since = started
            future = category.pending
            future.add_done_callback(lambda _f, c=category: self._finished(c, _f))
            waiting[category.name] = future
        cpu_loop = time.thread_time() - cpu_started

        if waiting:
            await asyncio.wait(waiting.values(), timeout=self.read_timeout)

        cpu_started = time.thread_time()
        devices: dict[str, DeviceReading] = {}
        battery: BatteryReading | None = None
        for name, future in waiting.items():
            category = self._categories[name]
            if not future.done():
                errors[category.running] = f"no answer within {self.read_timeout:g}s (its {category.step} hangs)"
                continue
            if category.pending is future:
                category.pending = None
            outcome: _Outcome = future.result()
            self.active[name] = outcome.source
            if outcome.error is not None:
                errors[outcome.source or name] = outcome.error
                continue
            for reading in outcome.readings:
                if isinstance(reading, BatteryReading):
                    battery = reading
                else:
                    devices[reading.device_id] = reading
        snapshot = Snapshot(taken_at=started, devices=devices, battery=battery, source_errors=errors)
        self.latest = snapshot
        self.samples += 1
        self._add_cpu(cpu_loop + time.thread_time() - cpu_started)
        if self.on_snapshot is not None:
            try:
                self.on_snapshot(snapshot)
            except Exception:
                log.exception("on_snapshot callback failed")
        return snapshot

    @staticmethod
    def _finished(category: _Category, future: asyncio.Future) -> None:
        if category.pending is future:
            category.pending = None

    def _run_category(self, category: _Category) -> _Outcome:
        """Worker thread: first usable source of the category, probed if needed, then read."""
        for source in category.sources:
            result = self.probe_results.get(source.name)
            if result is ProbeResult.FAIL:
                continue
            if result is not ProbeResult.OK:
                category.running, category.step = source.name, "probe"
                result = self._probe(source)
                if result is not ProbeResult.OK:
                    continue
            category.running, category.step = source.name, "read"
            try:
                readings = source.read(self.clock())
            except Exception as exc:
                return _Outcome(source.name, error=f"{type(exc).__name__}: {exc}")
            return _Outcome(source.name, readings=readings)
        return _Outcome(None)

    def _probe(self, source: TelemetrySource) -> ProbeResult:
        try:
            result = source.probe()
        except Exception as exc:
            source.detail = f"probe raised {type(exc).__name__}: {exc}"
            result = ProbeResult.FAIL
        if self.probe_results.get(source.name) is not result:
            log.info("telemetry source %s: %s (%s)", source.name, result.value, getattr(source, "detail", ""))
        self.probe_results[source.name] = result
        return result

    def _add_cpu(self, seconds: float) -> None:
        with self._cpu_lock:
            self.cpu_seconds += seconds

    # ---- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Sample every `interval` seconds until cancelled (a late round starts the next one at once)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.sample_once()
            next_at += self.interval
            delay = next_at - loop.time()
            if delay < 0:
                next_at, delay = loop.time(), 0.0
            await asyncio.sleep(delay)

    def busy(self) -> list[str]:
        """Sources whose earlier probe/read has not returned yet (they are skipped until it does)."""
        return [c.running for c in self._categories.values() if c.pending is not None]

    def reprobe(self) -> None:
        """Forget probe answers (after a hot-plug event): every source is probed again next round."""
        self.probe_results.clear()

    def close(self) -> None:
        """Stop the workers (a hung one ends with its call) and release what sources hold."""
        for category in self._categories.values():
            if category.worker is not None:
                category.worker.stop()
                category.worker = None
        for source in self.sources:
            close = getattr(source, "close", None)
            if close is not None and self.probe_results.get(source.name) is ProbeResult.OK:
                try:
                    close()
                except Exception:
                    log.exception("closing telemetry source %s failed", source.name)

    def describe(self) -> dict[str, Any]:
        """Probe answers and details, for logs and status output."""
        described = {}
        for source in self.sources:
            result = self.probe_results.get(source.name)
            described[source.name] = {"probe": result.value if result is not None else None,
                                      "detail": getattr(source, "detail", "")}
        return described
