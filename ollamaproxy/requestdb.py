"""SQLite request log (one row per request, never prompt text) written off the event loop, with a JSONL fallback."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("ollamaproxy.requestdb")

DB_NAME = "requests.sqlite3"
FALLBACK_NAME = "requests.fallback.jsonl"
SCHEMA_VERSION = 1
# Row fields in table order; `id` is unique per row across restarts (see RequestDb._next_id).
COLUMNS = ("id", "time", "request_id", "client", "model", "backend", "mode", "priority", "status",
           "queued_ms", "ttfb_ms", "total_ms", "tokens_in", "tokens_out", "energy_j", "outcome")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    request_id TEXT,
    client TEXT,
    model TEXT,
    backend TEXT,
    mode TEXT,
    priority TEXT,
    status INTEGER,
    queued_ms REAL,
    ttfb_ms REAL,
    total_ms REAL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    energy_j REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests(time);
"""
_INSERT = f"INSERT OR IGNORE INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_TEXT = ("request_id", "client", "model", "backend", "mode", "priority", "outcome")


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "ollamaproxy"


def default_db_path() -> Path:
    """$XDG_STATE_HOME/ollamaproxy/requests.sqlite3 (~/.local/state when unset)."""
    return state_dir() / DB_NAME


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)[:256]


class RequestDb:
    """Collects request records and writes them to SQLite in batches on its own thread.

    `submit()` only appends to a list (O(1), never blocks the event loop). A background task
    flushes every `flush_interval` seconds or once `batch_size` rows wait, on a dedicated
    writer thread with its own connection. When the database cannot be written (locked past
    the busy timeout, deleted directory, read-only, disk error) the batch goes to the JSONL
    fallback file instead; the fallback is imported (then removed) as soon as the database
    takes writes again, at the latest on the next start. A database file deleted while
    running is recreated. If even the fallback cannot be written the rows stay in memory
    (at most `max_pending`, oldest dropped first, with a warning) and are retried.

    Energy per request is estimated as live power of the backend's devices × total time when
    `power_of(backend_id)` gives a reading (it is shared by concurrent requests on the same
    device, so this is an upper bound); otherwise it stays NULL.
    """

    def __init__(self, path: Path | str | None = None, *, fallback_path: Path | str | None = None,
                 retention_days: float = 30, max_rows: int = 1_000_000, batch_size: int = 200,
                 flush_interval: float = 1.0, busy_timeout: float = 5.0, prune_every: int = 500,
                 max_pending: int = 100_000, power_of: Callable[[str], float | None] | None = None):
        self.path = Path(path) if path is not None else default_db_path()
        self.fallback_path = Path(fallback_path) if fallback_path is not None else self.path.with_name(FALLBACK_NAME)
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.busy_timeout = busy_timeout
        self.prune_every = prune_every
        self.max_pending = max_pending
        self.power_of = power_of
        self._pending: list[tuple] = []
        self._last_id = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._executor: ThreadPoolExecutor | None = None
        # Writer-thread state (touched only on the executor thread):
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._flushes = 0
        self._failing = False
        self.dropped = 0
        self.written = 0
        self.fallback_rows = 0

    # ---- event-loop side ----------------------------------------------------------------

    def _next_id(self) -> tuple[int, float]:
        """(a row id unique across restarts: nanoseconds, strictly increasing; the time in seconds)."""
        now = time.time_ns()
        row_id = now if now > self._last_id else self._last_id + 1
        self._last_id = row_id
        return row_id, now / 1e9

    def submit(self, record: dict) -> None:
        """Queue one request record (the request-log fields); cheap and non-blocking."""
        row_id, now = self._next_id()
        stamp = record.get("time")
        when = float(stamp) if _number(stamp) is not None else now
        backend = record.get("backend")
        total_ms = _number(record.get("total_ms"))
        energy = _number(record.get("energy_j"))
        if energy is None and backend and total_ms is not None and self.power_of is not None:
            try:
                watts = self.power_of(backend)
            except Exception:  # noqa: BLE001 - an estimate must never break logging
                watts = None
            if watts is not None and watts >= 0:
                energy = round(watts * total_ms / 1000.0, 3)
        status = record.get("status")
        self._pending.append((
            row_id, when, _text(record.get("request_id")), _text(record.get("client")), _text(record.get("model")),
            _text(backend), _text(record.get("mode")), _text(record.get("priority")),
            status if _integer(status) is not None else None,
            _number(record.get("queued_ms")), _number(record.get("ttfb_ms")), total_ms,
            _integer(record.get("tokens_in")), _integer(record.get("tokens_out")), energy,
            _text(record.get("outcome")),
        ))
        if len(self._pending) > self.max_pending:
            excess = len(self._pending) - self.max_pending
            del self._pending[:excess]
            self.dropped += excess
            log.warning(json.dumps({"event": "requestdb_dropped", "rows": excess, "total_dropped": self.dropped}))
        if len(self._pending) >= self.batch_size and self._wake is not None:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Open (or create) the database, import any fallback rows, prune, and start the writer task."""
        if self._task is not None:
            raise RuntimeError("RequestDb.start() called twice; call stop() first")
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="requestdb")
        self._wake = asyncio.Event()
        await self._in_thread(self._open_and_maintain)
        self._task = asyncio.create_task(self._run(), name="requestdb-writer")

    async def stop(self) -> None:
        """Write everything still pending (to the database or the fallback), then close."""
        if self._task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        try:
            await self._task
        finally:
            self._task = None
            await self._in_thread(self._close)
            assert self._executor is not None
            self._executor.shutdown(wait=True)
            self._executor = None
            self._wake = None

    async def flush(self) -> None:
        """Write what is pending now (tests and `stats` on a live service use it)."""
        await self._flush_once()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._flush_once()
            except Exception:
                log.exception("request database writer failed")
            if self._stopping:
                if self._pending:  # neither the database nor the fallback took them: say so
                    self.dropped += len(self._pending)
                    log.error(json.dumps({"event": "requestdb_lost", "rows": len(self._pending),
                                          "reason": "neither the database nor the fallback file is writable"}))
                    self._pending = []
                return

    async def _flush_once(self) -> None:
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        leftover = await self._in_thread(self._write, rows)
        if leftover:
            self._pending[:0] = leftover

    async def _in_thread(self, function, *args):
        if self._executor is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def query_stats(self, since_seconds: float, *, now: float | None = None) -> list[dict]:
        """Per backend and model statistics of the last `since_seconds` (blocking: call it via a thread
        from the event loop); see the module function `query_stats`."""
        return query_stats(self.path, since_seconds, now=now)

    # ---- writer thread ------------------------------------------------------------------

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _connection(self) -> sqlite3.Connection:
        """The open connection; reopened (recreating the file) when the database was deleted or replaced."""
        if self._conn is not None:
            identity = self._file_identity()
            if identity is not None and identity == self._identity:
                return self._conn
            log.warning(json.dumps({"event": "requestdb_reopen", "path": str(self.path),
                                    "reason": "database file was deleted or replaced"}))
            self._close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._identity = self._file_identity()
        return conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._identity = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _open_and_maintain(self) -> None:
        try:
            conn = self._connection()
            self._import_fallback(conn)
            self._prune(conn)
        except (sqlite3.Error, OSError) as error:
            self._close()
            self._report_failure(error)

    def _write(self, rows: list[tuple]) -> list[tuple]:
        """Write a batch; on any database failure append it to the fallback. Returns rows not stored anywhere."""
        try:
            conn = self._connection()
            with conn:
                conn.executemany(_INSERT, rows)
            self.written += len(rows)
            if self._failing:
                self._failing = False
                log.warning(json.dumps({"event": "requestdb_recovered", "path": str(self.path)}))
            if self.fallback_path.exists():
                self._import_fallback(conn)
            self._flushes += 1
            if self.prune_every and self._flushes % self.prune_every == 0:
                self._prune(conn)
            return []
        except (sqlite3.Error, OSError) as error:
            self._close()
            self._report_failure(error)
        try:
            self._append_fallback(rows)
            return []
        except OSError as error:
            log.warning(json.dumps({"event": "requestdb_fallback_failed", "path": str(self.fallback_path),
                                    "reason": str(error), "rows_kept_in_memory": len(rows)}))
            return rows

    def _report_failure(self, error: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning(json.dumps({"event": "requestdb_unwritable", "path": str(self.path), "reason": str(error),
                                    "fallback": str(self.fallback_path)}))

    def _append_fallback(self, rows: list[tuple]) -> None:
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(dict(zip(COLUMNS, row)), separators=(",", ":")) + "\n" for row in rows)
        with open(self.fallback_path, "a", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        self.fallback_rows += len(rows)

    def _import_fallback(self, conn: sqlite3.Connection) -> None:
        """Move fallback rows into the database in one transaction, then delete the file (ids make it idempotent)."""
        try:
            raw = self.fallback_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        rows, bad = [], 0
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                rows.append(tuple(item.get(column) for column in COLUMNS))
            except (ValueError, AttributeError):
                bad += 1  # a line cut short by a crash
        with conn:
            conn.executemany(_INSERT, rows)
        self.fallback_path.unlink(missing_ok=True)
        log.info(json.dumps({"event": "requestdb_fallback_imported", "rows": len(rows), "unreadable_lines": bad}))

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Drop rows older than `retention_days`, then the oldest beyond `max_rows`."""
        with conn:
            if self.retention_days and self.retention_days > 0:
                conn.execute("DELETE FROM requests WHERE time < ?", (time.time() - self.retention_days * 86400,))
            if self.max_rows and self.max_rows > 0:
                cut = conn.execute("SELECT id FROM requests ORDER BY id DESC LIMIT 1 OFFSET ?",
                                   (self.max_rows,)).fetchone()
                if cut is not None:
                    conn.execute("DELETE FROM requests WHERE id <= ?", (cut[0],))


# ---- analytics ----------------------------------------------------------------------------


def _percentile(sorted_values: list[float], percent: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(percent / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def query_stats(path: Path | str, since_seconds: float, *, now: float | None = None) -> list[dict]:
    """Per backend and model over the last `since_seconds`: requests, errors (HTTP status >= 400),
    p50/p95 total latency, p50 time to first byte (ms), total and mean energy (J; None when unknown),
    tokens out. Raises FileNotFoundError when there is no database at `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(str(path))
    since = (time.time() if now is None else now) - since_seconds
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute(
            "SELECT backend, model, status, total_ms, ttfb_ms, energy_j, tokens_out FROM requests WHERE time >= ?",
            (since,)).fetchall()
    finally:
        conn.close()
    groups: dict[tuple[str, str], dict[str, list]] = {}
    for backend, model, status, total_ms, ttfb_ms, energy_j, tokens_out in rows:
        group = groups.setdefault((backend or "", model or ""),
                                  {"status": [], "total": [], "ttfb": [], "energy": [], "tokens": []})
        group["status"].append(status)
        if total_ms is not None:
            group["total"].append(total_ms)
        if ttfb_ms is not None:
            group["ttfb"].append(ttfb_ms)
        if energy_j is not None:
            group["energy"].append(energy_j)
        if tokens_out is not None:
            group["tokens"].append(tokens_out)
    result = []
    for (backend, model), group in groups.items():
        total = sorted(group["total"])
        ttfb = sorted(group["ttfb"])
        energy = group["energy"]
        result.append({
            "backend": backend,
            "model": model,
            "requests": len(group["status"]),
            "errors": sum(1 for status in group["status"] if status is None or status >= 400),
            "p50_total_ms": _percentile(total, 50),
            "p95_total_ms": _percentile(total, 95),
            "p50_ttfb_ms": _percentile(ttfb, 50),
            "energy_j": round(sum(energy), 3) if energy else None,
            "mean_energy_j": round(sum(energy) / len(energy), 3) if energy else None,
            "tokens_out": sum(group["tokens"]) if group["tokens"] else None,
        })
    result.sort(key=lambda item: (-item["requests"], item["backend"], item["model"]))
    return result


__all__ = ["COLUMNS", "RequestDb", "default_db_path", "query_stats"]
