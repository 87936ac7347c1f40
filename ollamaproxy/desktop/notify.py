"""Desktop notifications (org.freedesktop.Notifications) for breakers, backends going down and Auto on power."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ollamaproxy.control import Control

from .variants import plain

log = logging.getLogger("ollamaproxy.desktop.notify")

NOTIFICATIONS = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"
APP_NAME = "ollamaproxy"

LOW, NORMAL, CRITICAL = 0, 1, 2
UP_HEALTH = frozenset({"healthy", "busy"})
DOWN_HEALTH = frozenset({"down", "misconfigured"})


@dataclass(frozen=True)
class Note:
    subject: str
    summary: str
    body: str
    urgency: int
    icon: str
    problem: bool          # False: a recovery (or plain news) that may replace a problem at once


@dataclass
class _Subject:
    shown: Note | None = None        # last notification sent for this subject
    sent_at: float | None = None
    notification_id: int = 0         # the daemon's id, for replaces_id
    pending: Note | None = None      # held back by the rate limit
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Notifier:
    """Listens to the control change feed and sends notifications on the session bus; never raises into the router.

    One subject per thing that can go wrong (a device's thermal breaker, the power budget, a
    backend, Auto's power-source switch). A subject's notification replaces its own earlier one
    (`replaces_id`), and a subject notifies at most once per `min_interval` seconds, except that the
    recovery of a problem on screen is shown at once; a notification held back by the limit is
    shown when the interval ends, with the latest news only. Urgency follows severity: critical for
    a thermal trip, normal for other problems, low for recoveries.
    """

    def __init__(self, control: Control, bus: MessageBus, *, min_interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.control = control
        self.bus = bus
        self.min_interval = min_interval
        self.clock = clock
        self._subjects: dict[str, _Subject] = {}
        self._health: dict[str, str] = {}
        self._queue: asyncio.Queue[Note] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._failure_logged = False
        self.sent: list[Note] = []   # what was handed to the daemon, oldest first (for tests and debugging)

    async def start(self) -> None:
        self._health = {b["id"]: _health_class(b["health"]) for b in self.control.backends()}
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="desktop-notifications")
        self.control.add_listener(self._on_change)

    async def stop(self) -> None:
        self.control.remove_listener(self._on_change)
        for subject in self._subjects.values():
            if subject.timer is not None:
                subject.timer.cancel()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    async def drained(self) -> None:
        """Wait until every accepted notification has been handed to the daemon (tests)."""
        await self._queue.join()

    # ---- what is worth a notification ------------------------------------------------

    def _on_change(self, topic: str, detail: dict) -> None:
        try:
            for note in self._notes(topic, detail):
                self.offer(note)
        except Exception:  # noqa: BLE001 - notifications are best-effort
            log.exception("building a notification for %r failed", topic)

    def _notes(self, topic: str, detail: dict) -> list[Note]:
        if topic == "breaker" and detail.get("transition") is not None:
            note = self._breaker_note(detail["transition"])
            return [note] if note else []
        if topic == "backends" and "id" in detail:
            note = self._backend_note(detail["id"])
            return [note] if note else []
        if topic == "mode-changed" and self.control.mode() == "auto" and "power-source" in detail.get("reason", ""):
            new = detail.get("new", "")
            label = self.control.mode_info(new)["label"] if new else new
            return [Note("auto-mode", f"AI efficiency: {label}", self.control.effective_reason().split(": ", 1)[-1],
                         NORMAL, "emblem-synchronizing-symbolic", problem=False)]
        return []

    def _breaker_note(self, transition) -> Note | None:
        if transition.breaker == "thermal":
            device = self._device_label(transition.subject)
            if transition.opened:
                return Note(f"thermal:{transition.subject}", f"{device} is too hot",
                            f"{transition.reason}. New AI requests avoid it until it cools down.",
                            CRITICAL, "temperature-symbolic", problem=True)
            return Note(f"thermal:{transition.subject}", f"{device} has cooled down",
                        f"{transition.reason}. It takes AI requests again.", LOW, "temperature-symbolic", problem=False)
        if transition.breaker == "power":
            if transition.opened:
                return Note("power-budget", "AI requests held: power budget reached",
                            f"{transition.reason}. New requests wait until the draw falls.",
                            NORMAL, "battery-caution-symbolic", problem=True)
            return Note("power-budget", "Power draw back within budget",
                        f"{transition.reason}. Held requests start again.", LOW, "battery-good-symbolic", problem=False)
        return None

    def _backend_note(self, backend_id: str) -> Note | None:
        state = self.control.backend(backend_id)
        now = _health_class(state["health"])
        before = self._health.get(backend_id)
        if now is None:
            return None
        self._health[backend_id] = now
        if before == "up" and now == "down":
            return Note(f"backend:{backend_id}", f"AI backend {backend_id} is down",
                        f"{state['health_reason'] or state['health']}. Requests go to the other backends.",
                        NORMAL, "network-error-symbolic", problem=True)
        if before == "down" and now == "up" and self._subjects.get(f"backend:{backend_id}") is not None:
            return Note(f"backend:{backend_id}", f"AI backend {backend_id} is back",
                        f"{backend_id} ({state['hardware']}) answers again.", LOW, "network-idle-symbolic",
                        problem=False)
        return None

    def _device_label(self, device_id: str) -> str:
        for device in self.control.devices():
            if device["id"] == device_id:
                return device["label"] or device_id
        return device_id

    # ---- replacing and rate limiting -------------------------------------------------

    def offer(self, note: Note) -> None:
        """Show `note` now, later (rate limit) or not at all (a problem that ended before it was shown)."""
        subject = self._subjects.setdefault(note.subject, _Subject())
        if subject.timer is not None:
            subject.timer.cancel()
            subject.timer = None
        held, subject.pending = subject.pending, None
        if not note.problem and subject.shown is not None and subject.shown.problem:
            self._send(subject, note)  # the recovery of a problem on screen: at once
            return
        shown_problem = subject.shown is not None and subject.shown.problem
        if not note.problem and held is not None and held.problem and not shown_problem:
            return  # the problem ended before it was shown: nothing to say
        now = self.clock()
        if subject.sent_at is None or now - subject.sent_at >= self.min_interval:
            self._send(subject, note)
            return
        subject.pending = note
        delay = subject.sent_at + self.min_interval - now
        subject.timer = asyncio.get_running_loop().call_later(delay, self._release_pending, note.subject)

    def _release_pending(self, key: str) -> None:
        subject = self._subjects[key]
        subject.timer = None
        note, subject.pending = subject.pending, None
        if note is not None:
            self._send(subject, note)

    def _send(self, subject: _Subject, note: Note) -> None:
        subject.shown = note
        subject.sent_at = self.clock()
        self._queue.put_nowait(note)

    async def _run(self) -> None:
        while True:
            note = await self._queue.get()
            try:
                await self._notify(note)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001
                self._failed(str(error))
            finally:
                self._queue.task_done()

    async def _notify(self, note: Note) -> None:
        subject = self._subjects[note.subject]
        hints = {"urgency": Variant("y", note.urgency), "desktop-entry": Variant("s", APP_NAME)}
        reply = await self.bus.call(Message(
            destination=NOTIFICATIONS, path=NOTIFICATIONS_PATH, interface=NOTIFICATIONS, member="Notify",
            signature="susssasa{sv}i",
            body=[APP_NAME, subject.notification_id, note.icon, note.summary, note.body, [], hints, -1]))
        if reply.message_type is MessageType.ERROR:
            self._failed(f"{reply.error_name}: {plain(reply.body)}")
            return
        subject.notification_id = int(reply.body[0])
        self.sent.append(note)
        self._failure_logged = False

    def _failed(self, why: str) -> None:
        if not self._failure_logged:
            self._failure_logged = True
            log.warning("cannot show desktop notifications (%s); carrying on without them", why)
        else:
            log.debug("notification not shown: %s", why)


def _health_class(health: str) -> str | None:
    if health in UP_HEALTH:
        return "up"
    if health in DOWN_HEALTH:
        return "down"
    return None
