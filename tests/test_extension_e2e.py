"""End to end: the ollamaproxy@fio.ie extension in a real headless GNOME Shell 48 with the real service.

Opt-in: set OLLAMAPROXY_E2E_SHELL=1 (CI does). Needs root on a Debian host: the first run builds
a Debian trixie chroot with GNOME Shell 48 at ${OLLAMAPROXY_CHROOT:-/var/cache/ollamaproxy/trixie}
(scripts/shell-chroot.sh, about 4 minutes and 1.2 GB, reused afterwards).

scripts/e2e-extension.sh runs the shell in the chroot on private buses, with the extension
installed through `gnome-extensions pack`/`install` and enabled. The service runs on the host
(`python -m ollamaproxy serve`, as the other tests run it) connected to the shell's session bus,
whose socket lies inside the chroot. The tests read and drive the shell with org.gnome.Shell.Eval
(unsafe mode), set modes with `busctl --user` (the chroot's), and save a screenshot of the open
menu to test-artifacts/extension-menu.png (OLLAMAPROXY_TEST_ARTIFACTS overrides the folder),
with the shell's log beside it.

The tests share one shell and one service and run in file order, each leaving the state the
next expects.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from test_extension_client import ROOT, SimBackend, Service, dbus_call, name_owner, wait_for

pytestmark = pytest.mark.skipif(
    os.environ.get("OLLAMAPROXY_E2E_SHELL") != "1",
    reason="headless GNOME Shell end-to-end test: set OLLAMAPROXY_E2E_SHELL=1 (root; builds a trixie chroot once)")

UUID = "ollamaproxy@fio.ie"
CHROOT = Path(os.environ.get("OLLAMAPROXY_CHROOT", "/var/cache/ollamaproxy/trixie"))
E2E_DIR = CHROOT / "run" / "e2e"
ARTIFACTS = Path(os.environ.get("OLLAMAPROXY_TEST_ARTIFACTS", ROOT / "test-artifacts"))
SCREENSHOT = ARTIFACTS / "extension-menu.png"
EFFICIENCY = "ie.fio.OllamaProxy.Efficiency"
SETUP_TIMEOUT = 1200  # a first run builds the chroot

FIND_TOGGLE = ("Main.panel.statusArea.quickSettings.menu._grid.get_children()"
               ".find(c => c.constructor.name.includes('EfficiencyToggle'))")
FIND_INDICATOR = ("Main.panel.statusArea.quickSettings._indicators.get_children()"
                  ".find(c => c.constructor.name.includes('EfficiencyIndicator'))")
STATE_JS = f"""(() => {{
    const t = {FIND_TOGGLE};
    const i = {FIND_INDICATOR};
    if (!t)
        return null;
    return {{
        visible: t.visible, subtitle: t.subtitle, checked: t.checked, iconName: t.iconName,
        title: t.title, footer: t._footer.text, menuEnabled: t.menuEnabled,
        ornaments: Object.fromEntries([...t._modeItems].map(([id, item]) => [id, item._ornament])),
        labels: [...t._modeItems].map(([, item]) => item.label.text),
        indicatorVisible: !!i && i.visible && i._indicator.visible,
        indicatorIcon: i ? i._indicator.icon_name : null,
    }};
}})()"""
CHECK, NONE = 2, 0  # PopupMenu.Ornament


class Shell:
    """The headless shell started by scripts/e2e-extension.sh up."""

    def __init__(self, proc: subprocess.Popen, log: Path, session: str, system: str):
        self.proc = proc
        self.log = log
        self.session = session
        self.system = system

    def call(self, interface: str, member: str, signature: str = "", body: list | None = None,
             *, destination: str = "org.gnome.Shell", path: str = "/org/gnome/Shell"):
        return dbus_call(self.session, interface, member, signature, body, destination=destination, path=path)

    def eval(self, code: str):
        ok, result = self.call("org.gnome.Shell", "Eval", "s", [code])
        assert ok, f"Eval failed: {result}\ncode: {code}"
        return json.loads(result) if result else None

    def state(self) -> dict | None:
        return self.eval(STATE_JS)

    def wait_state(self, what: str, predicate, timeout: float = 15.0) -> dict:
        last: dict = {}

        def probe():
            nonlocal last
            last = self.state()
            return last if last is not None and predicate(last) else None
        try:
            return wait_for(probe, timeout, what, interval=0.1)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {what}; toggle state: {last}") from None

    def extension_info(self) -> dict:
        info = self.call("org.gnome.Shell.Extensions", "GetExtensionInfo", "s", [UUID])[0]
        return {key: value.value for key, value in info.items()}

    def shell_log(self) -> str:
        path = E2E_DIR / "shell.log"
        return path.read_text(errors="replace") if path.exists() else "(no shell.log)"


def busctl(*args: str) -> str:
    """`busctl --user ARGS` in the chroot, against the shell's session bus."""
    result = subprocess.run(["bash", str(ROOT / "scripts" / "e2e-extension.sh"), "busctl", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"busctl {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("OLLAMAPROXY_E2E_SHELL=1 but not root: the chroot needs root")
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            pytest.fail(f"OLLAMAPROXY_E2E_SHELL=1 but {tool} is missing")
    log = tmp_path_factory.mktemp("e2e") / "e2e-extension.log"
    (E2E_DIR / "ready").unlink(missing_ok=True)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "e2e-extension.sh"), "up"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, OLLAMAPROXY_CHROOT=str(CHROOT)))

    def stop():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    try:
        wait_for(lambda: proc.poll() is not None or (E2E_DIR / "ready").exists(), SETUP_TIMEOUT,
                 "the headless shell", interval=0.2)
    except AssertionError:
        stop()
        pytest.fail(f"the headless shell did not come up:\n{log.read_text()}")
    if proc.poll() is not None:
        pytest.fail(f"scripts/e2e-extension.sh up exited with {proc.returncode}:\n{log.read_text()}")
    print(f"headless shell ready after {time.monotonic() - started:.1f} s")
    env = dict(line.split("=", 1) for line in (E2E_DIR / "ready").read_text().split())
    # the chroot's socket paths, seen from the host
    host = {key: value.replace("unix:path=", f"unix:path={CHROOT}", 1) for key, value in env.items()}
    handle = Shell(proc, log, host["session"], host["system"])
    yield handle
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "extension-shell.log").write_text(handle.shell_log())
    stop()


@pytest.fixture(scope="module")
def service(shell, tmp_path_factory):
    """The real service on the host, on the shell's session bus (and its UPower mock); not started."""
    tmp = tmp_path_factory.mktemp("service")
    sim = SimBackend()
    handle = Service(tmp, shell.session, sim.url, system_address=shell.system)
    yield handle
    handle.stop()
    sim.stop()


def service_mode(service: Service) -> str:
    return dbus_call(service.address, EFFICIENCY, "GetMode")[0]


# ---------------------------------------------------------------- tests, in order


def test_extension_is_active_without_error(shell):
    # enabling is asynchronous: INITIALIZED (6) / ACTIVATING (8) first
    try:
        info = wait_for(lambda: (i := shell.extension_info())["state"] not in (6.0, 8.0) and i, 20,
                        "the extension to finish enabling")
    except AssertionError:
        info = shell.extension_info()
    assert info["state"] == 1.0, f"extension not ACTIVE: {info}"  # ExtensionState.ACTIVE
    assert info["error"] == "", info
    assert info["enabled"] is True
    assert info["hasPrefs"] is False
    state = shell.state()
    assert state is not None, "no EfficiencyToggle in Quick Settings"
    assert state["title"] == "AI Efficiency"
    # no service yet: hidden, like the Power Mode toggle without power-profiles-daemon
    assert state["visible"] is False and state["indicatorVisible"] is False, state


def test_toggle_appears_when_the_service_starts(shell, service):
    service.start()
    state = shell.wait_state("the toggle to show Balanced",
                             lambda s: s["visible"] and s["subtitle"] == "Balanced")
    assert state["labels"] == ["Performance", "Balanced", "Efficiency", "Quiet", "Ultra Efficiency", "Auto"]
    assert state["ornaments"]["balanced"] == CHECK
    assert [o for mode, o in state["ornaments"].items() if mode != "balanced"] == [NONE] * 5
    assert state["checked"] is False and state["menuEnabled"] is True
    assert state["indicatorVisible"] is False, "no panel icon in Balanced"
    assert "Backends healthy: 1/2" in state["footer"], state["footer"]
    assert "Queue: 0" in state["footer"]
    assert "coretemp" in state["footer"] and "54 °C" in state["footer"], state["footer"]
    assert "On AC power · Battery 76 %" in state["footer"], state["footer"]


def test_subtitle_follows_a_mode_set_with_busctl(shell, service):
    busctl("call", "ie.fio.OllamaProxy", "/ie/fio/OllamaProxy", EFFICIENCY, "SetMode", "s", "quiet")
    state = shell.wait_state("subtitle Quiet", lambda s: s["subtitle"] == "Quiet")
    assert state["ornaments"]["quiet"] == CHECK and state["ornaments"]["balanced"] == NONE
    assert state["checked"] is True
    assert state["iconName"] == "weather-clear-night-symbolic"
    assert state["indicatorVisible"] is True and state["indicatorIcon"] == "weather-clear-night-symbolic"

    busctl("set-property", "ie.fio.OllamaProxy", "/ie/fio/OllamaProxy", EFFICIENCY, "Mode", "s", "efficiency")
    shell.wait_state("subtitle Efficiency", lambda s: s["subtitle"] == "Efficiency")


def test_activating_a_menu_item_changes_the_service_mode(shell, service):
    shell.eval(f"{FIND_TOGGLE}._modeItems.get('performance').activate(null)")
    wait_for(lambda: service_mode(service) == "performance", 10, "the service's Mode to become performance")
    state = shell.wait_state("the check mark on Performance",
                             lambda s: s["ornaments"]["performance"] == CHECK)
    assert state["subtitle"] == "Performance"
    assert state["ornaments"]["efficiency"] == NONE


def test_clicking_the_toggle_flips_between_balanced_and_the_last_mode(shell, service):
    shell.eval(f"{FIND_TOGGLE}.emit('clicked', 1)")
    wait_for(lambda: service_mode(service) == "balanced", 10, "Mode balanced after a click")
    shell.wait_state("unchecked in Balanced", lambda s: not s["checked"] and not s["indicatorVisible"])
    shell.eval(f"{FIND_TOGGLE}.emit('clicked', 1)")
    wait_for(lambda: service_mode(service) == "performance", 10, "Mode performance after a second click")
    shell.wait_state("checked in Performance", lambda s: s["checked"] and s["subtitle"] == "Performance")


def test_degraded_reason_shows_in_the_subtitle(shell, service):
    dbus_call(service.address, "ie.fio.OllamaProxy.Routing", "Pause")
    try:
        state = shell.wait_state("the paused reason", lambda s: s["subtitle"] == "Performance · Paused")
        assert state["visible"]
    finally:
        dbus_call(service.address, "ie.fio.OllamaProxy.Routing", "Resume")
    shell.wait_state("no reason after Resume", lambda s: s["subtitle"] == "Performance")


def test_footer_and_subtitle_follow_the_power_source(shell, service):
    from dbus_fast import Variant

    def on_battery(value: bool) -> None:
        dbus_call(shell.system, "org.freedesktop.DBus.Properties", "Set", "ssv",
                  ["org.freedesktop.UPower", "OnBattery", Variant("b", value)],
                  destination="org.freedesktop.UPower", path="/org/freedesktop/UPower")

    on_battery(True)
    try:
        state = shell.wait_state("On battery in the footer", lambda s: s["footer"].startswith("On battery"))
        assert "Battery 76 %" in state["footer"]
        shell.wait_state("the on-battery reason", lambda s: s["subtitle"] == "Performance · On battery")
    finally:
        on_battery(False)
    shell.wait_state("AC power again", lambda s: s["footer"].startswith("On AC power")
                     and s["subtitle"] == "Performance")


def test_screenshot_of_the_open_menu(shell, service):
    busctl("call", "ie.fio.OllamaProxy", "/ie/fio/OllamaProxy", EFFICIENCY, "SetMode", "s", "quiet")
    shell.wait_state("Quiet", lambda s: s["subtitle"] == "Quiet")
    shell.eval("""(() => {
        Main.overview.hide();
        Main.messageTray.getSources().forEach(source => source.destroy());
        return true;
    })()""")
    time.sleep(1.0)  # let the overview animation end
    shell.eval(f"""(() => {{
        Main.panel.statusArea.quickSettings.menu.open(false);
        {FIND_TOGGLE}.menu.open(false);
        return true;
    }})()""")
    time.sleep(1.5)  # the menus ease open
    inside = "/run/e2e/extension-menu.png"
    ok, written = shell.call("org.gnome.Shell.Screenshot", "Screenshot", "bbs", [False, False, inside],
                             path="/org/gnome/Shell/Screenshot", destination="org.gnome.Shell.Screenshot")
    assert ok, written
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(CHROOT / written.lstrip("/"), SCREENSHOT)
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 800)
    assert shell.eval(f"{FIND_TOGGLE}.menu.isOpen") is True
    shell.eval("Main.panel.statusArea.quickSettings.menu.close(false)")


def test_stopping_the_service_hides_the_toggle_and_starting_shows_it(shell, service):
    service.stop()
    wait_for(lambda: name_owner(service.address) is None, 10, "the bus name to go")
    state = shell.wait_state("hidden without the service",
                             lambda s: not s["visible"] and not s["indicatorVisible"])
    assert state["checked"] is False
    service.start()
    state = shell.wait_state("shown again with the persisted mode",
                             lambda s: s["visible"] and s["subtitle"] == "Quiet")
    assert state["ornaments"]["quiet"] == CHECK and state["indicatorVisible"] is True


def test_disable_removes_everything_and_enable_restores_it(shell, service):
    # grid items, toggle menus (in the overlay), panel indicators
    count = ("(() => { const qs = Main.panel.statusArea.quickSettings;"
             " return [qs.menu._grid.get_n_children(), qs.menu._overlay.get_n_children(),"
             " qs._indicators.get_n_children()]; })()")
    before = shell.eval(count)
    assert shell.call("org.gnome.Shell.Extensions", "DisableExtension", "s", [UUID])[0]
    wait_for(lambda: shell.state() is None, 10, "the toggle to go")
    after = shell.eval(count)
    assert after == [n - 1 for n in before], f"grid, overlay, indicators before {before}, after {after}"
    assert shell.eval(f"!{FIND_INDICATOR}") is True

    assert shell.call("org.gnome.Shell.Extensions", "EnableExtension", "s", [UUID])[0]
    state = shell.wait_state("the toggle back after enable", lambda s: s["visible"] and s["subtitle"] == "Quiet")
    assert state["indicatorVisible"] is True
    assert shell.eval(count) == before
    info = shell.extension_info()
    assert info["state"] == 1.0 and info["error"] == "", info


def test_shell_log_has_no_errors_from_the_extension(shell):
    lines = shell.shell_log().splitlines()
    ours = [line for line in lines if UUID in line or "ollamaproxy" in line.lower()]
    errors = [line for line in lines if "JS ERROR" in line]
    assert not ours and not errors, "\n".join(ours + errors)
