"""ESLint (GNOME Shell's coding style, gnome-extension/eslint.config.js) over the extension and the gjs tests.

Installs the pinned linters with `npm ci` in gnome-extension/ when node_modules is missing or
older than package-lock.json (needs the npm registry once; offline afterwards). Skips, saying
why, when Node.js/npm are not installed (Debian: apt-get install nodejs npm).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "gnome-extension"
ESLINT = EXT / "node_modules" / ".bin" / "eslint"
INSTALLED = EXT / "node_modules" / ".package-lock.json"


def npm_ci() -> None:
    if ESLINT.exists() and INSTALLED.exists() and \
            INSTALLED.stat().st_mtime >= (EXT / "package-lock.json").stat().st_mtime:
        return
    result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"


def test_eslint_gnome_shell_style():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm missing (Debian: apt-get install nodejs npm); JavaScript not linted")
    npm_ci()
    result = subprocess.run(["npm", "run", "--silent", "lint"], cwd=EXT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"eslint:\n{result.stdout}\n{result.stderr}"
