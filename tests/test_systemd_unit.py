"""The systemd user unit: static checks, `systemd-analyze --user verify`, and a real `systemd --user` manager."""

import configparser
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd-user" / "ollamaproxy.service"
SYSTEMD = Path("/lib/systemd/systemd")


def unit_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_declares_dbus_activation_restart_reload_and_hardening():
    unit = unit_sections()
    service = unit["Service"]
    assert service["Type"] == "dbus" and service["BusName"] == "ie.fio.OllamaProxy"
    assert service["ExecStart"] == "%h/.local/bin/ollamaproxy serve"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectKernelTunables": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
                       "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
                       "StandardOutput": "journal", "StandardError": "journal"}.items():
        assert service[key] == value, key
    assert service["ReadWritePaths"] == "-%h/.local/state/ollamaproxy"
    assert unit["Install"]["WantedBy"] == "default.target"


def test_dbus_activation_file_names_the_unit():
    path = ROOT / "dbus" / "ie.fio.OllamaProxy.service"
    if not path.exists():
        pytest.skip("dbus/ie.fio.OllamaProxy.service is not in the tree yet")
    text = path.read_text()
    assert "SystemdService=ollamaproxy.service" in text.splitlines()
    assert "Name=ie.fio.OllamaProxy" in text.splitlines()


def _install(home: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(extra_env or {})}
    done = subprocess.run(["bash", str(ROOT / "install.sh"), "--no-venv", "--python", sys.executable],
                          check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_unit_passes_systemd_analyze_verify(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    _install(home)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    unit = home / ".config" / "systemd" / "user" / "ollamaproxy.service"
    done = subprocess.run(["systemd-analyze", "--user", "verify", str(unit)],
                          env={"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
                          check=False, capture_output=True, text=True, timeout=120)
    # verify only warns about unknown keys and bad values: any output is a failure
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# ---------------------------------------------------------------- a real systemd --user manager

# Adapted from the desktop testkit's systemd-user-lab.sh: systemd --user refuses to start unless
# /run/systemd/system exists, so a private mount namespace fakes it; the host is untouched.
LAB = r"""#!/bin/bash
set -u
if [ -z "${_OLLAMAPROXY_LAB:-}" ]; then
    export _OLLAMAPROXY_LAB=1
    exec unshare -m --propagation private "$0" "$@"
fi
work=$1; shift
mkdir -p "$work/fake/system" && mkdir -p -m 700 "$work/rt"
mount --bind "$work/fake" /run/systemd || exit 90
export XDG_RUNTIME_DIR=$work/rt
"$SYSTEMD_BINARY" --user > "$work/manager.log" 2>&1 &
manager=$!
for _ in $(seq 400); do [ -S "$XDG_RUNTIME_DIR/systemd/private" ] && break; sleep 0.05; done
systemctl --user is-system-running --wait > /dev/null
systemctl --user start dbus.socket || exit 91
export DBUS_SESSION_BUS_ADDRESS=unix:path=$XDG_RUNTIME_DIR/bus
rc=0
"$@" || rc=$?
systemctl --user stop ollamaproxy.service > /dev/null 2>&1
kill "$manager"; wait "$manager" 2>/dev/null
exit $rc
"""

# Runs inside the lab: installs with install.sh, then drives the unit with systemctl/busctl and
# writes what it saw to $RESULTS (the pytest side asserts on it).
SCENARIO = r'''
import json, os, socket, subprocess, sys, time, urllib.request
from pathlib import Path

work, mode, port, results = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
home = Path(os.environ["HOME"])
seen = {}

def sh(*argv, check=True):
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    if check and done.returncode:
        raise SystemExit(f"{argv} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return done

def prop(name):
    return sh("systemctl", "--user", "show", "-p", name, "--value", "ollamaproxy.service").stdout.strip()

def eventually(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; unit log:\n" + log_text())
        time.sleep(0.02)

def log_text():
    path = work / "unit.log"
    return path.read_text(errors="replace") if path.exists() else ""

def exits():
    path = work / "exits.log"
    return path.read_text().splitlines() if path.exists() else []

def answers():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False

done = sh("bash", os.environ["INSTALL_SH"], "--no-venv", "--python", sys.executable)
seen["install_daemon_reload"] = "ran systemctl --user daemon-reload" in done.stdout
config = home / ".config" / "ollamaproxy" / "config.toml"
config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nmanagement = ""\n\n[[backends]]\nid = "ollama"\n'
                  f'url = "http://127.0.0.1:9"\n\n[telemetry]\nenabled = false\n')
dropin = home / ".config" / "systemd" / "user" / "ollamaproxy.service.d"
dropin.mkdir(parents=True)
lines = ["[Service]", f"StandardOutput=append:{work}/unit.log", f"StandardError=append:{work}/unit.log",
         "RestartSec=100ms",
         # how each main process ended (systemd forgets an inactive unit's ExecMain* properties)
         f"ExecStopPost=+/bin/sh -c 'echo \"$$EXIT_CODE $$EXIT_STATUS\" >> {work}/exits.log'",
         # This VM cannot set up these two mounts for any unit (status 226/NAMESPACE); desktops can.
         "ProtectKernelTunables=no", "ProtectKernelLogs=no"]
if sys.executable.startswith(("/tmp/", "/var/tmp/")):
    # The lab runs the checkout's own venv (install.sh --no-venv); a checkout under /tmp (CI clones
    # can live there) would be hidden by PrivateTmp=, which an installed venv never is.
    lines.append("PrivateTmp=no")
if mode == "simple":
    lines += ["Type=simple", "UnsetEnvironment=DBUS_SESSION_BUS_ADDRESS"]
(dropin / "lab.conf").write_text("\n".join(lines) + "\n")
sh("systemctl", "--user", "daemon-reload")

if mode == "simple":
    sh("systemctl", "--user", "start", "ollamaproxy.service")
    eventually(answers, "the proxy to answer")
    first = int(prop("MainPID"))
    status = Path(f"/proc/{first}/status").read_text()
    seen["no_new_privs"] = "NoNewPrivs:\t1" in status
    seen["seccomp"] = "Seccomp:\t2" in status
    os.kill(first, 9)
    eventually(lambda: prop("MainPID") not in ("0", str(first)) and answers(), "the restart after a crash")
    second = int(prop("MainPID"))
    seen["restarted"] = second != first
    seen["n_restarts"] = int(prop("NRestarts"))
    # Change the config, then reload: the new queue depth must be applied by the running process.
    config.write_text(config.read_text() + "\n[queue]\nmax_depth = 7\n")
    reload = sh("systemctl", "--user", "reload", "ollamaproxy.service", check=False)
    seen["reload_rc"] = reload.returncode
    def reloaded_or_gone():
        return '"reload' in log_text() or len(exits()) > 1
    eventually(reloaded_or_gone, "SIGHUP to be handled")
    seen["survived_reload"] = prop("MainPID") == str(second) and prop("ActiveState") == "active"
    seen["reload_applied"] = [json.loads(line).get("applied") for line in log_text().splitlines()
                              if '"event":"reloaded"' in line]
    seen["exits"] = exits()
    sh("systemctl", "--user", "stop", "ollamaproxy.service")
    seen["stopped_result"] = prop("Result")
else:
    call = sh("busctl", "--user", "--timeout=60", "get-property", "ie.fio.OllamaProxy", "/ie/fio/OllamaProxy",
              "ie.fio.OllamaProxy.Efficiency", "Mode", check=False)
    seen["busctl"] = (call.returncode, call.stdout.strip(), call.stderr.strip())
    seen["active"] = prop("ActiveState")
    seen["answers_http"] = answers()
seen["log_tail"] = log_text()[-3000:]
results.write_text(json.dumps(seen))
'''


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the lab needs root (unshare -m and a bind mount over /run/systemd)"
    for tool in ("unshare", "systemctl", "busctl"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not SYSTEMD.exists():
        return f"needs {SYSTEMD}"
    if not Path("/usr/lib/systemd/user/dbus.socket").exists():
        return "needs the dbus-user-session package (the user bus socket)"
    if not Path("/run/systemd").is_dir():
        return "needs /run/systemd to bind-mount over"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_lab(mode: str) -> dict:
    # PrivateTmp= hides /tmp and /var/tmp from the service, so the lab's HOME lives elsewhere.
    base = Path.home() / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ollamaproxy-systemd-lab-", dir=base))
    try:
        home = work / "home"
        home.mkdir()
        lab = work / "lab.sh"
        lab.write_text(LAB)
        lab.chmod(0o755)
        scenario = work / "scenario.py"
        scenario.write_text(SCENARIO)
        results = work / "results.json"
        # dbus-daemon finds ~/.local/share/dbus-1/services through XDG_DATA_HOME (without it, the
        # passwd home); the user manager hands its environment on to the bus.
        env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SYSTEMD_BINARY": str(SYSTEMD),
               "INSTALL_SH": str(ROOT / "install.sh"), "XDG_CONFIG_HOME": str(home / ".config"),
               "XDG_DATA_HOME": str(home / ".local" / "share")}
        done = subprocess.run([str(lab), str(work), sys.executable, str(scenario), str(work), mode,
                               str(_free_port()), str(results)], check=False, env=env, capture_output=True, text=True, timeout=300)
        manager_log = (work / "manager.log").read_text(errors="replace") if (work / "manager.log").exists() else ""
        assert done.returncode == 0 and results.exists(), (
            f"lab failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\nmanager:\n{manager_log[-3000:]}")
        return json.loads(results.read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(_lab_unavailable() is not None, reason=str(_lab_unavailable()))
def test_user_manager_restarts_on_failure_and_reload_sends_sighup():
    """Type=simple variant of the installed unit (D-Bus off): sandbox applied, crash → restart, reload → SIGHUP."""
    seen = _run_lab("simple")
    assert seen["install_daemon_reload"] is True
    assert seen["no_new_privs"] and seen["seccomp"], seen
    assert seen["restarted"] and seen["n_restarts"] >= 1 and seen["exits"][0] == "killed KILL", seen
    assert seen["reload_rc"] == 0, seen
    assert seen["stopped_result"] == "success", seen
    assert seen["survived_reload"], json.dumps(seen, indent=1)  # SIGHUP reloads, it does not kill
    assert seen["reload_applied"] == [["queue"]], json.dumps(seen, indent=1)


def _desktop_service_present() -> bool:
    return (ROOT / "ollamaproxy" / "desktop" / "service.py").exists() and shutil.which("busctl") is not None


@pytest.mark.skipif(_lab_unavailable() is not None, reason=str(_lab_unavailable()))
@pytest.mark.skipif(not _desktop_service_present(), reason="the D-Bus service (ollamaproxy.desktop) is not in the tree")
def test_dbus_activation_starts_the_unit():
    """Type=dbus as installed: the first busctl call to ie.fio.OllamaProxy starts ollamaproxy.service."""
    seen = _run_lab("dbus")
    rc, out, _err = seen["busctl"]
    assert rc == 0, seen
    assert out.startswith('s "'), seen
    assert seen["active"] == "active" and seen["answers_http"], seen
