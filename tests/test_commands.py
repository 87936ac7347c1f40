"""CLI subcommands: `stats` over the request database and `migrate-ollama` against a fake systemctl."""

import argparse
import json
import os
import sqlite3
import stat
import time

import pytest

from ollamaproxy.commands import migrate, stats
from ollamaproxy.requestdb import RequestDb


def run_command(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ollamaproxy")
    sub = parser.add_subparsers(dest="command", required=True)
    module.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


# ---------------------------------------------------------------- stats


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("24h", 86400), ("7d", 604800), ("90s", 90),
                                          ("2w", 1209600), ("1.5h", 5400), (" 12H ", 43200)])
def test_parse_duration(text, seconds):
    assert stats.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "0m", "1y", "24 hours", "1e3s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="30m, 24h, 7d|longer than zero"):
        stats.parse_duration(text)


def test_stats_bad_since_exits_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_command(stats, ["stats", "--since", "yesterday", "--db", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "invalid duration 'yesterday'" in capsys.readouterr().err


def test_stats_missing_database_exits_1(capsys, tmp_path):
    missing = tmp_path / "nope.sqlite3"
    assert run_command(stats, ["stats", "--db", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"no request database at {missing}" in err and "--db" in err
    assert not missing.exists()


def test_stats_default_database_path(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert run_command(stats, ["stats"]) == 1
    assert str(tmp_path / "ollamaproxy" / "requests.sqlite3") in capsys.readouterr().err


async def _database(tmp_path):
    path = tmp_path / "requests.sqlite3"
    db = RequestDb(path, flush_interval=3600, power_of=lambda backend: 20.0)
    await db.start()
    for total in (100.0, 200.0, 300.0):
        db.submit({"backend": "gpu0", "model": "tiny:1b", "status": 200, "total_ms": total, "ttfb_ms": 10.0})
    db.submit({"backend": "gpu0", "model": "tiny:1b", "status": 503, "total_ms": 5.0})
    db.submit({"backend": "cpu0", "model": "small:3b", "status": 200, "total_ms": 12_000.0, "ttfb_ms": 500.0})
    db.submit({"backend": "cpu0", "model": "small:3b", "status": 200, "total_ms": 50.0,
               "time": time.time() - 3 * 86400})
    await db.stop()
    return path


async def test_stats_table(capsys, tmp_path):
    path = await _database(tmp_path)
    assert run_command(stats, ["stats", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"5 request(s), 1 error(s) in the last 24h ({path})"
    header = lines[2].split()
    assert header[:4] == ["BACKEND", "MODEL", "REQUESTS", "ERRORS"]
    gpu = next(line for line in lines if line.startswith("gpu0"))
    assert gpu.split()[:8] == ["gpu0", "tiny:1b", "4", "1", "100", "ms", "300", "ms"]
    cpu = next(line for line in lines if line.startswith("cpu0"))
    assert "12.0 s" in cpu and "240.0" in cpu  # 20 W for 12 s
    assert run_command(stats, ["stats", "--db", str(path), "--since", "7d"]) == 0
    assert capsys.readouterr().out.startswith("6 request(s)")


async def test_stats_json(capsys, tmp_path):
    path = await _database(tmp_path)
    assert run_command(stats, ["stats", "--db", str(path), "--json", "--since", "30m"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since_seconds"] == 1800 and data["database"] == str(path)
    by_key = {(row["backend"], row["model"]): row for row in data["stats"]}
    assert by_key[("gpu0", "tiny:1b")]["requests"] == 4 and by_key[("gpu0", "tiny:1b")]["errors"] == 1
    assert by_key[("gpu0", "tiny:1b")]["p50_total_ms"] == 100.0
    assert by_key[("cpu0", "small:3b")]["energy_j"] == 240.0


def test_stats_empty_window(capsys, tmp_path):
    path = tmp_path / "r.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, time REAL, backend TEXT, model TEXT, status "
                 "INTEGER, total_ms REAL, ttfb_ms REAL, energy_j REAL, tokens_out INTEGER)")
    conn.close()
    assert run_command(stats, ["stats", "--db", str(path), "--since", "30m"]) == 0
    assert capsys.readouterr().out.startswith("no requests in the last 30m")


def test_stats_unreadable_database(capsys, tmp_path):
    path = tmp_path / "r.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    assert run_command(stats, ["stats", "--db", str(path)]) == 1
    assert "cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------- migrate-ollama

FAKE_SYSTEMCTL = r"""#!/bin/bash
# Fake systemctl: records its arguments; "show" answers like systemd for FAKE_SCOPE, reading
# OLLAMA_HOST from the drop-ins under FAKE_UNIT_DIR as a daemon-reload would.
echo "$*" >> "$FAKE_LOG"
user=no
if [ "$1" = "--user" ]; then user=yes; shift; fi
case "$1" in
  show)
    if { [ "$user" = yes ] && [ "$FAKE_SCOPE" = user ]; } || { [ "$user" = no ] && [ "$FAKE_SCOPE" = system ]; }; then
      env=""
      for f in "$FAKE_UNIT_DIR"/ollama.service.d/*.conf; do
        [ -f "$f" ] && env=$(sed -n 's/^Environment="\(.*\)"$/\1/p' "$f")
      done
      printf 'LoadState=loaded\nActiveState=active\nEnvironment=%s\n' "$env"
    else
      printf 'LoadState=not-found\nActiveState=inactive\nEnvironment=\n'
    fi ;;
  daemon-reload) exit "${FAKE_RELOAD_RC:-0}" ;;
  try-restart) exit 0 ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture
def fake_systemd(tmp_path, monkeypatch):
    script = tmp_path / "systemctl"
    script.write_text(FAKE_SYSTEMCTL)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    unit_dir = tmp_path / "units"
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_UNIT_DIR", str(unit_dir))
    monkeypatch.setenv("FAKE_SCOPE", "system")

    class Fake:
        systemctl = str(script)
        directory = unit_dir
        drop_in = unit_dir / "ollama.service.d" / "ollamaproxy.conf"

        def args(self, *extra):
            return ["migrate-ollama", "--systemctl", self.systemctl, "--systemd-dir", str(unit_dir), *extra]

        def calls(self):
            return log.read_text().splitlines() if log.exists() else []

    return Fake()


def test_migrate_explains_without_changing_anything(fake_systemd, capsys):
    assert run_command(migrate, fake_systemd.args()) == 0
    out = capsys.readouterr().out
    assert "Found Ollama as the system unit ollama.service (active)" in out
    assert str(fake_systemd.drop_in) in out and 'Environment="OLLAMA_HOST=127.0.0.1:11435"' in out
    assert "sudo ollamaproxy migrate-ollama --apply" in out and "--revert" in out
    assert not fake_systemd.directory.exists()
    assert all(call.startswith(("--user show", "show")) for call in fake_systemd.calls())


def test_migrate_apply_and_revert_system_unit(fake_systemd, capsys):
    assert run_command(migrate, fake_systemd.args("--apply")) == 0
    assert fake_systemd.drop_in.read_text().endswith('[Service]\nEnvironment="OLLAMA_HOST=127.0.0.1:11435"\n')
    calls = fake_systemd.calls()
    assert "daemon-reload" in calls and "try-restart ollama.service" in calls
    assert not any(call.startswith("--user daemon-reload") for call in calls)
    out = capsys.readouterr().out
    assert "Done: Ollama now listens on 127.0.0.1:11435" in out

    assert run_command(migrate, fake_systemd.args("--apply")) == 0
    assert "Already done" in capsys.readouterr().out

    assert run_command(migrate, fake_systemd.args("--revert")) == 0
    assert not fake_systemd.drop_in.exists() and not fake_systemd.drop_in.parent.exists()
    assert fake_systemd.calls()[-2:] == ["daemon-reload", "try-restart ollama.service"]
    assert run_command(migrate, fake_systemd.args("--revert")) == 0
    assert "Nothing to revert" in capsys.readouterr().out


def test_migrate_user_unit(fake_systemd, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SCOPE", "user")
    assert run_command(migrate, fake_systemd.args("--apply", "--port", "11500")) == 0
    assert 'OLLAMA_HOST=127.0.0.1:11500' in fake_systemd.drop_in.read_text()
    calls = fake_systemd.calls()
    assert "--user daemon-reload" in calls and "--user try-restart ollama.service" in calls
    assert "user unit" in capsys.readouterr().out


def test_migrate_user_unit_default_directory(fake_systemd, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_SCOPE", "user")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("FAKE_UNIT_DIR", str(tmp_path / "config" / "systemd" / "user"))
    assert run_command(migrate, ["migrate-ollama", "--systemctl", fake_systemd.systemctl, "--apply"]) == 0
    assert (tmp_path / "config" / "systemd" / "user" / "ollama.service.d" / "ollamaproxy.conf").is_file()


def test_migrate_dry_run_changes_nothing(fake_systemd, capsys):
    assert run_command(migrate, fake_systemd.args("--apply", "--dry-run")) == 0
    assert "Dry run" in capsys.readouterr().out
    assert not fake_systemd.directory.exists()
    assert not any("daemon-reload" in call or "restart" in call for call in fake_systemd.calls())


def test_migrate_without_an_ollama_unit(fake_systemd, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SCOPE", "none")
    assert run_command(migrate, fake_systemd.args("--apply")) == 1
    assert "no ollama.service found as a user unit or system unit" in capsys.readouterr().err
    assert not fake_systemd.directory.exists()


def test_migrate_needs_root_for_the_system_unit(fake_systemd, monkeypatch, capsys):
    monkeypatch.setattr(migrate, "_writable", lambda path: False)
    assert run_command(migrate, fake_systemd.args("--apply")) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and "sudo ollamaproxy migrate-ollama --apply" in err
    assert not fake_systemd.directory.exists()


def test_migrate_reports_a_failing_daemon_reload(fake_systemd, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_RELOAD_RC", "1")
    assert run_command(migrate, fake_systemd.args("--apply")) == 1
    err = capsys.readouterr().err
    assert "daemon-reload` failed (exit 1)" in err and "migrate-ollama --revert" in err
    assert fake_systemd.drop_in.exists()


def test_migrate_warns_when_another_drop_in_wins(fake_systemd, capsys):
    other = fake_systemd.directory / "ollama.service.d" / "zz-override.conf"
    other.parent.mkdir(parents=True)
    other.write_text('[Service]\nEnvironment="OLLAMA_HOST=0.0.0.0:11434"\n')
    assert run_command(migrate, fake_systemd.args("--apply")) == 1
    assert "overrides it" in capsys.readouterr().out


def test_migrate_rejects_the_proxy_port(fake_systemd, capsys):
    assert run_command(migrate, fake_systemd.args("--apply", "--port", "11434")) == 2
    assert "not 11434" in capsys.readouterr().err


def test_migrate_with_a_missing_systemctl(tmp_path, capsys):
    code = run_command(migrate, ["migrate-ollama", "--systemctl", str(tmp_path / "nope"), "--systemd-dir",
                                 str(tmp_path / "units")])
    assert code == 1 and "no ollama.service found" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "units")
