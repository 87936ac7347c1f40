"""The owner of telemetry snapshots and breaker states: feeds the board, announces every transition."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable

from ollamaproxy.config import BackendConfig, Config
from ollamaproxy.policy.breakers import BreakerBoard, DeviceSample, PowerBudgetBreaker, ReasonCode, Transition

log = logging.getLogger("ollamaproxy.safety")


def backend_device_ids(backend: BackendConfig) -> tuple[str, ...]:
    """Devices a backend is known to run on before any reading: `devices` ids without wildcards,
    else `nvidia:<gpu_index>`. These must keep reporting (stale telemetry holds the backend).

    After each snapshot the links are recomputed by hardware.linking.devices_for_backend (the
    iGPU, CPU package and NPU found on this machine). A backend with no linked device (an NPU
    without sensors, a remote server) is trusted: only the power budget and pauses hold it.
    """
    if backend.devices is not None:
        return tuple(d for d in backend.devices if not any(c in d for c in "*?["))
    if backend.hardware == "nvidia" and backend.gpu_index is not None:
        return (f"nvidia:{backend.gpu_index}",)
    return ()


class Safety:
    """Keeps the latest Snapshot, runs the breaker board on it, and tells listeners about transitions."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.backends = list(config.backends)
        self.backend_devices = {b.id: backend_device_ids(b) for b in config.backends}
        self.board = BreakerBoard(
            budget_watts=config.power.budget_watts,
            resume_ratio=config.power.resume_ratio,
            pause_celsius=config.thermal.pause_celsius,
            resume_celsius=config.thermal.resume_celsius,
            stale_seconds=config.telemetry.stale_seconds,
            backend_devices=self.backend_devices,
        )
        self.board.expect({d for devices in self.backend_devices.values() for d in devices}, clock())
        self.latest = None  # hardware.readings.Snapshot
        self.recent: deque[Transition] = deque(maxlen=100)
        self._listeners: list[Callable[[Transition], None]] = []

    def add_listener(self, listener: Callable[[Transition], None]) -> None:
        self._listeners.append(listener)

    def _announce(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            self.recent.append(transition)
            log.log(logging.WARNING if transition.opened else logging.INFO, json.dumps({
                "event": "breaker_open" if transition.opened else "breaker_closed",
                "breaker": transition.breaker, "subject": transition.subject,
                "code": transition.code.value, "reason": transition.reason,
            }))
            for listener in self._listeners:
                listener(transition)

    # ---- inputs ----------------------------------------------------------------------

    def on_snapshot(self, snapshot) -> list[Transition]:
        """Feed one telemetry snapshot (from the sampler) to the breakers."""
        self.latest = snapshot
        self._link_devices(snapshot)
        samples = [
            DeviceSample(reading.device_id, reading.taken_at if reading.error is None else None,
                         reading.temperature_c, reading.error)
            for reading in snapshot.devices.values()
        ]
        transitions = self.board.observe(snapshot.total_power_w(), samples, snapshot.taken_at)
        self._announce(transitions)
        return transitions

    def apply_config(self, config: Config) -> None:
        """New thresholds take effect at the next reading (breakers keep their open/closed state)."""
        board = self.board
        budget = config.power.budget_watts
        if budget is None:
            board.power = None
        elif board.power is None:
            board.power = PowerBudgetBreaker(budget, config.power.resume_ratio)
        else:
            board.power.budget = budget
            board.power.resume_at = budget * config.power.resume_ratio
        board.pause_celsius = config.thermal.pause_celsius
        board.resume_celsius = config.thermal.resume_celsius
        for thermal in board.thermal.values():
            thermal.pause = config.thermal.pause_celsius
            thermal.resume = config.thermal.resume_celsius
        self.backends = list(config.backends)

    def _link_devices(self, snapshot) -> None:
        """Re-link each backend to the devices it runs on (devices come and go; config patterns win)."""
        from ollamaproxy.hardware.linking import devices_for_backend

        for backend in self.backends:
            devices = tuple(devices_for_backend(backend.hardware, backend.gpu_index, snapshot,
                                                device_match=backend.devices))
            self.backend_devices[backend.id] = devices
            self.board.backend_devices[backend.id] = devices

    def device_event(self, action: str, device) -> list[str]:
        """A udev hot-plug event: a removed device holds its backends at once; its return releases them."""
        from ollamaproxy.hardware.linking import affected_backends

        if action not in ("add", "remove"):
            return []
        specs = [(b.id, b.hardware, b.gpu_index) for b in self.backends]
        affected = affected_backends(device, specs, self.latest)
        now = self.clock()
        transitions = []
        for backend_id in affected:
            if action == "remove":
                transitions.append(self.board.device_removed(backend_id, device.device_id, now))
            else:
                transitions.append(self.board.device_added(backend_id, device.device_id, now))
        self._announce([t for t in transitions if t is not None])
        return affected

    def tick(self) -> list[Transition]:
        """Called on a timer: data that stopped arriving (a hung sampler) opens stale breakers."""
        transitions = self.board.tick(self.clock())
        self._announce(transitions)
        return transitions

    def pause(self, backend_id: str | None = None, reason: str = "") -> Transition | None:
        """Manual pause, global or one backend: new work waits, in-flight work continues."""
        if backend_id is not None and backend_id not in self.backend_devices:
            raise KeyError(backend_id)
        transition = self.board.pause(backend_id, reason or "paused by the user", self.clock())
        self._announce([transition] if transition else [])
        return transition

    def resume(self, backend_id: str | None = None) -> Transition | None:
        if backend_id is not None and backend_id not in self.backend_devices:
            raise KeyError(backend_id)
        transition = self.board.resume(backend_id, self.clock())
        self._announce([transition] if transition else [])
        return transition

    # ---- answers ---------------------------------------------------------------------

    def blocked(self, backend_id: str) -> tuple[ReasonCode, str] | None:
        return self.board.blocked(backend_id)

    @property
    def paused(self) -> bool:
        return self.board.global_pause.open

    def backend_live(self, backend_id: str) -> tuple[float | None, float | None]:
        """(power W summed over linked devices, hottest linked temperature) from the latest snapshot."""
        snapshot = self.latest
        if snapshot is None:
            return None, None
        power = None
        temperature = None
        for device_id in self.backend_devices.get(backend_id, ()):
            reading = snapshot.devices.get(device_id)
            if reading is None or reading.error is not None:
                continue
            if reading.power_w is not None:
                power = (power or 0.0) + reading.power_w
            if reading.temperature_c is not None:
                temperature = reading.temperature_c if temperature is None else max(temperature, reading.temperature_c)
        return power, temperature
