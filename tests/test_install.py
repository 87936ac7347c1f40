"""install.sh into a temporary HOME: every file accounted for, idempotent upgrades, clean uninstall, dry runs, rollback."""

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

FAKE_SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$FAKE_LOG"
[ -n "$FAKE_NO_SYSTEMD" ] && { echo "Failed to connect to bus: No medium found" >&2; exit 1; }
exit 0
"""
FAKE_GNOME_EXTENSIONS = """#!/bin/sh
echo "gnome-extensions $*" >> "$FAKE_LOG"
exit 0
"""
FAKE_PGREP = """#!/bin/sh
echo "pgrep $*" >> "$FAKE_LOG"
[ -n "$FAKE_GNOME_RUNNING" ]
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with its type and content hash (links by target)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return found


class Installer:
    def __init__(self, tmp_path: Path, repo: Path):
        self.repo = repo
        self.home = tmp_path / "home"
        self.home.mkdir()
        (self.home / "Documents").mkdir()  # something of the user's that must survive
        (self.home / "Documents" / "notes.txt").write_text("mine")
        self.fakebin = tmp_path / "fakebin"
        self.fakebin.mkdir()
        _executable(self.fakebin / "systemctl", FAKE_SYSTEMCTL)
        _executable(self.fakebin / "gnome-extensions", FAKE_GNOME_EXTENSIONS)
        _executable(self.fakebin / "pgrep", FAKE_PGREP)
        self.log = tmp_path / "calls.log"
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.env = {"HOME": str(self.home), "PATH": f"{self.fakebin}:/usr/bin:/bin", "FAKE_LOG": str(self.log),
                    "TMPDIR": str(self.tmpdir), "LANG": "C.UTF-8"}

    def run(self, *args: str, check: bool = True, **env) -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", str(self.repo / "install.sh"), *args], env={**self.env, **env},
                              check=False, capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"install.sh {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    @property
    def data(self) -> Path:
        return self.home / ".local" / "share"

    @property
    def config(self) -> Path:
        return self.home / ".config"

    def manifest(self) -> list[tuple[str, str]]:
        lines = (self.data / "ollamaproxy" / "install-manifest").read_text().splitlines()
        return [(line.split("\t")[0], line.split("\t")[-1]) for line in lines if line and not line.startswith("#")]


def _copy_repo(tmp_path: Path, *, dbus: bool = True, extension: bool = True, package: bool = False) -> Path:
    """A source tree with what install.sh reads; the D-Bus and extension parts are small stand-ins."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(ROOT / "install.sh", repo / "install.sh")
    shutil.copy2(ROOT / "config.example.toml", repo / "config.example.toml")
    shutil.copytree(ROOT / "systemd-user", repo / "systemd-user")
    if dbus:
        (repo / "dbus").mkdir()
        (repo / "dbus" / "ie.fio.OllamaProxy.service").write_text(
            "# activation\n[D-BUS Service]\nName=ie.fio.OllamaProxy\nExec=/usr/bin/env ollamaproxy serve\n"
            "SystemdService=ollamaproxy.service\n")
        (repo / "dbus" / "ie.fio.OllamaProxy.xml").write_text("<node name='/ie/fio/OllamaProxy'/>\n")
    if extension:
        ext = repo / "gnome-extension" / "ollamaproxy@fio.ie"
        ext.mkdir(parents=True)
        (ext / "metadata.json").write_text('{"uuid": "ollamaproxy@fio.ie", "shell-version": ["48"]}\n')
        (ext / "extension.js").write_text("export default class {}\n")
    if package:
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy2(ROOT / name, repo / name)
        shutil.copytree(ROOT / "ollamaproxy", repo / "ollamaproxy",
                        ignore=shutil.ignore_patterns("__pycache__"))
    return repo


@pytest.fixture
def installer(tmp_path):
    return Installer(tmp_path, _copy_repo(tmp_path))


NO_VENV = ("--no-venv", "--python", PYTHON)


def test_install_accounts_for_every_file_and_uninstall_leaves_nothing(installer):
    before = snapshot(installer.home)
    done = installer.run(*NO_VENV)
    assert "ollamaproxy is installed" in done.stdout
    home, data, config = installer.home, installer.data, installer.config
    wrapper = home / ".local" / "bin" / "ollamaproxy"
    unit = config / "systemd" / "user" / "ollamaproxy.service"
    dbus_service = data / "dbus-1" / "services" / "ie.fio.OllamaProxy.service"
    xml = data / "dbus-1" / "interfaces" / "ie.fio.OllamaProxy.xml"
    extension = data / "gnome-shell" / "extensions" / "ollamaproxy@fio.ie"
    config_file = config / "ollamaproxy" / "config.toml"
    manifest = data / "ollamaproxy" / "install-manifest"

    assert unit.read_text() == (ROOT / "systemd-user" / "ollamaproxy.service").read_text()
    assert config_file.read_text() == (ROOT / "config.example.toml").read_text()
    assert (extension / "metadata.json").is_file() and (extension / "extension.js").is_file()
    assert xml.read_text() == (installer.repo / "dbus" / "ie.fio.OllamaProxy.xml").read_text()
    service_lines = dbus_service.read_text().splitlines()
    assert f"Exec={wrapper} serve" in service_lines and "SystemdService=ollamaproxy.service" in service_lines
    assert "Name=ie.fio.OllamaProxy" in service_lines
    assert os.access(wrapper, os.X_OK)
    version = subprocess.run([str(wrapper), "--version"], check=False, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("ollamaproxy ")

    # every new path is in the manifest (files directly, or under a directory tree it owns)
    after = snapshot(home)
    new = {home / rel for rel in after.keys() - before.keys()}
    entries = installer.manifest()
    listed = {Path(path) for _, path in entries}
    trees = [Path(path) for kind, path in entries if kind == "tree"]
    unaccounted = {p for p in new if p not in listed and p != manifest and not any(t in p.parents for t in trees)}
    assert unaccounted == set()
    assert {kind for kind, _ in entries} == {"mkdir", "file", "config", "tree"}
    assert "systemctl --user show-environment" in installer.calls()
    assert "systemctl --user daemon-reload" in installer.calls()

    done = installer.run("--uninstall")
    assert "ollamaproxy is uninstalled" in done.stdout
    assert snapshot(installer.home) == before


def test_dry_run_changes_nothing(installer):
    before = snapshot(installer.home)
    done = installer.run(*NO_VENV, "--dry-run")
    assert "Dry run" in done.stdout and "would write the launcher" in done.stdout
    assert snapshot(installer.home) == before
    assert list(installer.tmpdir.iterdir()) == []
    assert "systemctl --user daemon-reload" not in installer.calls()
    installer.run(*NO_VENV)
    installed = snapshot(installer.home)
    done = installer.run("--uninstall", "--dry-run")
    assert "would remove" in done.stdout
    assert snapshot(installer.home) == installed


def test_second_run_upgrades_in_place_and_keeps_an_edited_config(installer):
    before = snapshot(installer.home)
    installer.run(*NO_VENV)
    config_file = installer.config / "ollamaproxy" / "config.toml"
    unit = installer.config / "systemd" / "user" / "ollamaproxy.service"
    edited = config_file.read_text().replace('max_concurrent = 1 ', 'max_concurrent = 2 ')
    assert edited != config_file.read_text()
    config_file.write_text(edited)
    unit.write_text("# an older unit\n")
    first_manifest = installer.manifest()

    done = installer.run(*NO_VENV)
    assert "Upgrading ollamaproxy in place" in done.stdout and "kept the existing config" in done.stdout
    assert config_file.read_text() == edited
    assert unit.read_text() == (ROOT / "systemd-user" / "ollamaproxy.service").read_text()
    assert sorted(installer.manifest()) == sorted(first_manifest)

    done = installer.run("--uninstall")
    assert "kept" in done.stdout and "edited since install" in done.stdout
    left = snapshot(installer.home)
    assert left.keys() - before.keys() == {".config", ".config/ollamaproxy", ".config/ollamaproxy/config.toml"}
    assert tomllib.loads(config_file.read_text())["backends"][0]["max_concurrent"] == 2


def test_uninstall_purge_removes_edited_config_and_state(installer):
    before = snapshot(installer.home)
    installer.run(*NO_VENV)
    (installer.config / "ollamaproxy" / "config.toml").write_text("# mine now\n")
    state = installer.home / ".local" / "state" / "ollamaproxy"
    state.mkdir(parents=True)
    (state / "requests.sqlite3").write_bytes(b"x")
    installer.run("--uninstall", "--purge")
    after = snapshot(installer.home)
    assert after.keys() - before.keys() == {".local", ".local/state"}  # the parents were not created by us


def test_uninstall_keeps_the_state_directory_without_purge(installer):
    installer.run(*NO_VENV)
    state = installer.home / ".local" / "state" / "ollamaproxy"
    state.mkdir(parents=True)
    done = installer.run("--uninstall")
    assert state.is_dir() and "kept" in done.stdout and str(state) in done.stdout


def test_without_user_systemd_it_says_what_to_run(installer):
    done = installer.run(*NO_VENV, FAKE_NO_SYSTEMD="1")
    assert "no systemd user manager reachable" in done.stdout and "systemctl --user daemon-reload" in done.stdout
    assert "systemctl --user daemon-reload" not in installer.calls()
    assert "gnome-extensions enable ollamaproxy@fio.ie" in done.stdout
    assert not any(call.startswith("gnome-extensions") for call in installer.calls())


def test_extension_is_enabled_in_a_running_gnome_session(installer):
    done = installer.run(*NO_VENV, FAKE_GNOME_RUNNING="1")
    assert "gnome-extensions enable ollamaproxy@fio.ie" in installer.calls()
    assert "enabled the GNOME extension" in done.stdout
    installer.run("--uninstall", FAKE_GNOME_RUNNING="1")
    assert "gnome-extensions disable ollamaproxy@fio.ie" in installer.calls()
    assert "systemctl --user disable --now ollamaproxy.service" in installer.calls()


def test_missing_optional_parts_are_skipped_with_a_message(tmp_path):
    installer = Installer(tmp_path, _copy_repo(tmp_path, dbus=False, extension=False))
    before = snapshot(installer.home)
    done = installer.run(*NO_VENV)
    assert "skipped the D-Bus interface XML" in done.stdout and "skipped the GNOME extension" in done.stdout
    generated = (installer.data / "dbus-1" / "services" / "ie.fio.OllamaProxy.service").read_text()
    assert "SystemdService=ollamaproxy.service" in generated
    assert f"Exec={installer.home}/.local/bin/ollamaproxy serve" in generated
    installer.run("--uninstall")
    assert snapshot(installer.home) == before


def test_a_failure_leaves_no_half_installed_state(installer):
    before_first = snapshot(installer.home)
    # Something in the way of the extension directory: the commit fails part-way through.
    blocker = installer.data / "gnome-shell"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    before = snapshot(installer.home)
    done = installer.run(*NO_VENV, check=False)
    assert done.returncode != 0
    assert "gnome-shell exists and is not a directory" in done.stderr and "nothing was changed" in done.stderr
    assert snapshot(installer.home) == before
    assert list(installer.tmpdir.iterdir()) == []

    # The same failure during an upgrade restores the previous installation exactly.
    blocker.unlink()
    installer.run(*NO_VENV)
    installed = snapshot(installer.home)
    ext = installer.data / "gnome-shell" / "extensions"
    shutil.rmtree(ext)
    ext.write_text("in the way")
    installed = snapshot(installer.home)
    done = installer.run(*NO_VENV, check=False)
    assert done.returncode != 0 and "rolling back" in done.stderr
    assert snapshot(installer.home) == installed
    ext.unlink()
    installer.run("--uninstall")
    assert snapshot(installer.home).keys() - before_first.keys() <= {".local", ".local/share"}


def test_bad_python_is_refused_before_anything_changes(installer, tmp_path):
    before = snapshot(installer.home)
    done = installer.run("--no-venv", "--python", str(tmp_path / "no-such-python"), check=False)
    assert done.returncode == 1 and "Python not found" in done.stderr
    old = tmp_path / "python-old"
    _executable(old, "#!/bin/sh\nexit 1\n")
    done = installer.run("--no-venv", "--python", str(old), check=False)
    assert done.returncode == 1 and "3.11" in done.stderr
    without = tmp_path / "python-without-ollamaproxy"
    _executable(without, '#!/bin/sh\ncase "$2" in *ollamaproxy*) exit 1 ;; esac\nexit 0\n')
    done = installer.run("--no-venv", "--python", str(without), check=False)
    assert done.returncode == 1 and "cannot import ollamaproxy" in done.stderr
    done = installer.run("--python", str(without), check=False)  # venv mode needs the package sources
    assert done.returncode == 1 and "no pyproject.toml" in done.stderr
    assert snapshot(installer.home) == before


def test_unknown_option(installer):
    done = installer.run("--frobnicate", check=False)
    assert done.returncode == 2 and "unknown option" in done.stderr
    assert installer.run("--help").stdout.startswith("Usage:")


def test_uninstall_without_an_install(installer):
    done = installer.run("--uninstall")
    assert "Nothing to uninstall" in done.stdout


def test_example_config_is_valid():
    done = subprocess.run([PYTHON, "-m", "ollamaproxy", "check-config", str(ROOT / "config.example.toml")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout


def test_example_config_mentions_every_section():
    from ollamaproxy.config import Config

    text = (ROOT / "config.example.toml").read_text()
    for section in Config.model_fields:
        header = "[[backends]]" if section == "backends" else f"[{section}]"
        assert header in text, f"config.example.toml does not document [{section}]"


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs python3 for the virtualenv")
def test_virtualenv_install_upgrade_and_uninstall(tmp_path):
    """The real thing: a virtualenv with pip install of the tree (uses the configured package index)."""
    installer = Installer(tmp_path, _copy_repo(tmp_path, package=True))
    installer.env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    before = snapshot(installer.home)
    done = installer.run("--python", shutil.which("python3"))
    assert "Creating the virtualenv" in done.stdout
    venv = installer.data / "ollamaproxy" / "venv"
    assert venv.is_symlink() and (venv / "bin" / "python").exists()
    wrapper = installer.home / ".local" / "bin" / "ollamaproxy"
    version = subprocess.run([str(wrapper), "--version"], check=False, capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin"})
    assert version.returncode == 0 and version.stdout.startswith("ollamaproxy ")
    first_target = os.readlink(venv)
    installer.run("--python", shutil.which("python3"))
    assert os.readlink(venv) != first_target and not (venv.parent / first_target).exists()
    assert sum(1 for p in venv.parent.iterdir() if p.name.startswith("venv-")) == 1
    installer.run("--uninstall")
    assert snapshot(installer.home) == before
    assert list(installer.tmpdir.iterdir()) == []
