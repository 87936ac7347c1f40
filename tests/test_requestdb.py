"""Request database: batched writes off the loop, JSONL fallback when locked/deleted/unwritable, retention, stats."""

import json
import os
import sqlite3
import time

import pytest
from conftest import backend_entry, wait_until

from ollamaproxy.requestdb import COLUMNS, RequestDb, default_db_path, query_stats


def record(n: int = 0, **fields) -> dict:
    base = {"request_id": f"req-{n}", "client": "127.0.0.1", "model": "tiny:1b", "backend": "gpu0",
            "mode": "balanced", "priority": "normal", "status": 200, "queued_ms": 1.0, "ttfb_ms": 10.0 + n,
            "total_ms": 100.0 + n, "outcome": "ok"}
    base.update(fields)
    return base


def rows(path) -> list[dict]:
    conn = sqlite3.connect(path)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        conn.close()


def request_ids(path) -> list[str]:
    return [r["request_id"] for r in rows(path)]


def fallback_ids(path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines() if line]


@pytest.fixture
async def dbs(tmp_path):
    """Factory for started RequestDbs under tmp_path; all stopped at teardown."""
    started: list[RequestDb] = []

    async def make(name: str = "requests.sqlite3", **kw) -> RequestDb:
        kw.setdefault("flush_interval", 3600)  # tests flush explicitly
        db = RequestDb(tmp_path / "state" / name, **kw)
        await db.start()
        started.append(db)
        return db

    yield make
    for db in started:
        await db.stop()


def test_default_path_follows_xdg_state_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_db_path() == tmp_path / "ollamaproxy" / "requests.sqlite3"
    assert RequestDb().fallback_path == tmp_path / "ollamaproxy" / "requests.fallback.jsonl"


async def test_rows_are_written_with_the_documented_columns_and_no_prompt(dbs):
    db = await dbs()
    db.submit(record(1, tokens_in=12, tokens_out=34, prompt="secret text", messages=[{"content": "secret"}]))
    assert db.pending == 1
    await db.flush()
    assert db.pending == 0
    [row] = rows(db.path)
    assert tuple(row) == COLUMNS
    assert row["request_id"] == "req-1" and row["tokens_in"] == 12 and row["tokens_out"] == 34
    assert row["status"] == 200 and row["total_ms"] == 101.0 and row["energy_j"] is None
    assert b"secret" not in db.path.read_bytes()
    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_a_full_batch_is_written_without_waiting_for_the_interval(dbs):
    db = await dbs(batch_size=5)
    for n in range(5):
        db.submit(record(n))
    await wait_until(lambda: len(rows(db.path)) == 5, message="the batch to be written")


async def test_stop_writes_everything_pending(tmp_path):
    db = RequestDb(tmp_path / "r.sqlite3", flush_interval=3600)
    await db.start()
    for n in range(7):
        db.submit(record(n))
    await db.stop()
    assert request_ids(db.path) == [f"req-{n}" for n in range(7)]


async def test_energy_is_estimated_from_live_power(dbs):
    watts = {"gpu0": 200.0, "cpu0": None}
    db = await dbs(power_of=watts.get)
    db.submit(record(0, total_ms=1500.0))
    db.submit(record(1, backend="cpu0"))
    db.submit(record(2, backend=None, status=404))
    db.submit(record(3, energy_j=7.5))
    await db.flush()
    assert [r["energy_j"] for r in rows(db.path)] == [300.0, None, None, 7.5]


async def test_locked_database_falls_back_to_jsonl_and_is_imported_when_free(dbs):
    db = await dbs(busy_timeout=0.05)
    db.submit(record(0))
    await db.flush()
    holder = sqlite3.connect(db.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for n in (1, 2, 3):
            db.submit(record(n))
        await db.flush()
        assert db.pending == 0
        assert fallback_ids(db.fallback_path) == ["req-1", "req-2", "req-3"]
    finally:
        holder.execute("COMMIT")
        holder.close()
    db.submit(record(4))
    await db.flush()
    assert request_ids(db.path) == [f"req-{n}" for n in range(5)]
    assert not db.fallback_path.exists()


async def test_rows_from_a_locked_shutdown_are_imported_on_the_next_start(tmp_path):
    path = tmp_path / "r.sqlite3"
    first = RequestDb(path, flush_interval=3600, busy_timeout=0.05)
    await first.start()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        for n in range(3):
            first.submit(record(n))
        await first.stop()
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert fallback_ids(first.fallback_path) == ["req-0", "req-1", "req-2"]
    second = RequestDb(path, flush_interval=3600)
    await second.start()
    try:
        assert request_ids(path) == ["req-0", "req-1", "req-2"]
        assert not second.fallback_path.exists()
    finally:
        await second.stop()


async def test_import_is_idempotent(tmp_path):
    path = tmp_path / "r.sqlite3"
    db = RequestDb(path, flush_interval=3600)
    await db.start()
    db.submit(record(0))
    await db.stop()
    # A crash between the import's commit and the file's removal leaves rows in both places.
    [row] = rows(path)
    (tmp_path / "requests.fallback.jsonl").write_text(json.dumps(row) + "\n" + '{"id": 1, "time": 1, "requ')
    again = RequestDb(path, flush_interval=3600)
    await again.start()
    await again.stop()
    assert request_ids(path) == ["req-0"]


async def test_database_deleted_mid_run_is_recreated(dbs):
    db = await dbs()
    db.submit(record(0))
    await db.flush()
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{db.path}{suffix}")
        except FileNotFoundError:
            pass
    for n in (1, 2):
        db.submit(record(n))
    await db.flush()
    assert request_ids(db.path) == ["req-1", "req-2"]
    assert not db.fallback_path.exists()


async def test_state_directory_deleted_mid_run_is_recreated(dbs):
    db = await dbs()
    db.submit(record(0))
    await db.flush()
    for name in os.listdir(db.path.parent):
        os.unlink(db.path.parent / name)
    os.rmdir(db.path.parent)
    db.submit(record(1))
    await db.flush()
    assert request_ids(db.path) == ["req-1"]


async def test_unopenable_database_uses_the_fallback(tmp_path):
    path = tmp_path / "requests.sqlite3"
    path.mkdir()  # a directory where the database should be: SQLite cannot open it
    db = RequestDb(path, flush_interval=3600)
    await db.start()
    db.submit(record(0))
    await db.stop()
    assert fallback_ids(db.fallback_path) == ["req-0"]
    path.rmdir()
    recovered = RequestDb(path, flush_interval=3600)
    await recovered.start()
    await recovered.stop()
    assert request_ids(path) == ["req-0"] and not recovered.fallback_path.exists()


async def test_rows_stay_in_memory_when_nothing_is_writable(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    db = RequestDb(blocker / "requests.sqlite3", flush_interval=3600)
    await db.start()
    try:
        db.submit(record(0))
        await db.flush()
        assert db.pending == 1  # neither the database nor the fallback could take it
        blocker.unlink()
        db.submit(record(1))
        await db.flush()
        assert db.pending == 0
    finally:
        await db.stop()
    assert request_ids(db.path) == ["req-0", "req-1"]


async def test_retention_by_age_and_row_count(tmp_path):
    path = tmp_path / "r.sqlite3"
    db = RequestDb(path, flush_interval=3600)
    await db.start()
    now = time.time()
    db.submit(record(0, time=now - 40 * 86400))
    for n in range(1, 6):
        db.submit(record(n, time=now - n))
    await db.stop()
    assert len(rows(path)) == 6
    pruned = RequestDb(path, flush_interval=3600, retention_days=30, max_rows=3)
    await pruned.start()
    await pruned.stop()
    assert request_ids(path) == ["req-3", "req-4", "req-5"]


async def test_periodic_pruning(dbs):
    db = await dbs(max_rows=2, prune_every=1)
    for n in range(4):
        db.submit(record(n))
        await db.flush()
    assert request_ids(db.path) == ["req-2", "req-3"]


async def test_query_stats_numbers(dbs):
    db = await dbs(power_of=lambda backend: 10.0)
    for n, total in enumerate((100.0, 200.0, 300.0, 400.0, 1000.0)):
        db.submit(record(n, total_ms=total, ttfb_ms=total / 10))
    db.submit(record(9, status=503, outcome="backend_failed", total_ms=50.0, ttfb_ms=None))
    db.submit(record(10, model="other:7b", backend="cpu0", total_ms=20.0, ttfb_ms=5.0))
    db.submit(record(11, backend=None, model="ghost:latest", status=404, total_ms=1.0, ttfb_ms=None))
    db.submit(record(12, time=time.time() - 7200))  # outside the window
    await db.flush()
    stats = {(s["backend"], s["model"]): s for s in db.query_stats(3600)}
    gpu = stats[("gpu0", "tiny:1b")]
    assert gpu["requests"] == 6 and gpu["errors"] == 1
    assert gpu["p50_total_ms"] == 200.0 and gpu["p95_total_ms"] == 1000.0
    assert gpu["p50_ttfb_ms"] == 30.0  # 10, 20, 30, 40, 100 (the 503 has none)
    assert gpu["energy_j"] == pytest.approx(10.0 * (100 + 200 + 300 + 400 + 1000 + 50) / 1000)
    assert gpu["mean_energy_j"] == pytest.approx(gpu["energy_j"] / 6, abs=1e-3)
    assert stats[("cpu0", "other:7b")]["requests"] == 1
    assert stats[("", "ghost:latest")]["errors"] == 1 and stats[("", "ghost:latest")]["energy_j"] is None
    assert sum(s["requests"] for s in stats.values()) == 8


def test_query_stats_without_a_database(tmp_path):
    with pytest.raises(FileNotFoundError):
        query_stats(tmp_path / "missing.sqlite3", 60)
    assert not (tmp_path / "missing.sqlite3").exists()


async def test_stats_match_requests_sent_through_a_router(sims, routers, http, dbs):
    gpu = await sims("gpu0", ["tiny:1b"])
    cpu = await sims("cpu0", ["small:3b"])
    handle = await routers([backend_entry(gpu, hardware="nvidia"), backend_entry(cpu)])
    for _ in range(4):
        async with http.post(f"{handle.url}/api/generate", json={"model": "tiny:1b", "prompt": "hello secret",
                                                                 "stream": False}) as resp:
            assert resp.status == 200
    for _ in range(2):
        async with http.post(f"{handle.url}/api/chat", json={"model": "small:3b", "stream": True,
                                                             "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
            await r.read()
    async with http.post(f"{handle.url}/api/generate", json={"model": "ghost", "prompt": "x"}) as resp:
        assert resp.status == 404
    db = await dbs()
    lines = handle.log_lines()
    for line in lines:
        db.submit(line)  # what the request-log sink will do for every record
    await db.flush()
    stats = {(s["backend"], s["model"]): s for s in db.query_stats(3600)}
    assert {key: s["requests"] for key, s in stats.items()} == {
        ("gpu0", "tiny:1b"): 4, ("cpu0", "small:3b"): 2, ("", "ghost:latest"): 1}
    assert {key: s["errors"] for key, s in stats.items()} == {
        ("gpu0", "tiny:1b"): 0, ("cpu0", "small:3b"): 0, ("", "ghost:latest"): 1}
    totals = sorted(line["total_ms"] for line in lines if line["backend"] == "gpu0")
    assert stats[("gpu0", "tiny:1b")]["p50_total_ms"] == totals[1]  # nearest rank of 4
    assert stats[("gpu0", "tiny:1b")]["p95_total_ms"] == totals[3]
    assert b"hello secret" not in db.path.read_bytes()
    stored = rows(db.path)
    assert {r["request_id"] for r in stored} == {line["request_id"] for line in lines}
    assert {r["mode"] for r in stored if r["backend"]} == {"balanced"}
