"""Static checks of the GNOME Shell extension (gnome-extension/): metadata, what gets packed, and the
extensions.gnome.org review rules that can be read off the source. No GNOME needed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "gnome-extension"
SRC = EXT / "ollamaproxy@fio.ie"
XML = ROOT / "dbus" / "ie.fio.OllamaProxy.xml"
UUID = "ollamaproxy@fio.ie"


def sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(SRC.glob("*.js"))}


def test_metadata_names_the_shell_versions_and_the_project():
    meta = json.loads((SRC / "metadata.json").read_text())
    assert meta["uuid"] == UUID == SRC.name
    assert meta["shell-version"] == ["45", "46", "47", "48", "49"]
    assert meta["url"].startswith("https://")
    assert meta["name"] and len(meta["description"]) > 40
    assert not set(meta) - {"uuid", "name", "description", "shell-version", "url", "version-name",
                            "gettext-domain", "settings-schema", "session-modes"}


def test_the_contract_xml_is_not_copied_into_the_source_tree():
    # the single copy is dbus/ie.fio.OllamaProxy.xml; build.sh packs it beside the code
    copies = [p for p in EXT.rglob("*.xml") if not {"node_modules", "dist"} & set(p.relative_to(EXT).parts)]
    assert not copies, copies


def test_stage_ships_the_contract_beside_the_code(tmp_path):
    result = subprocess.run(["bash", str(EXT / "build.sh"), "stage", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    staged = tmp_path / UUID
    assert result.stdout.strip() == str(staged)
    assert (staged / "ie.fio.OllamaProxy.xml").read_bytes() == XML.read_bytes()
    names = {p.name for p in staged.iterdir()}
    assert names == {"metadata.json", "extension.js", "efficiencyClient.js", "stylesheet.css",
                     "ie.fio.OllamaProxy.xml"}
    # every relative import of the extension is shipped
    for text in sources().values():
        for module in re.findall(r"from '\./([^']+)'", text):
            assert module in names, module


def test_client_module_imports_only_gi_modules():
    # so that plain `gjs -m` can load it (tests/gjs/client_test.js does)
    imports = re.findall(r"^import .* from '([^']+)';", sources()["efficiencyClient.js"], re.M)
    assert imports and all(spec.startswith("gi://") for spec in imports), imports


def test_extension_uses_esm_and_no_timers_or_synchronous_io():
    for name, text in sources().items():
        assert "imports." not in text, f"{name}: legacy imports (ESM only for GNOME 45+)"
        for banned in ("timeout_add", "setInterval", "setTimeout", "idle_add",  # no polling
                       "load_contents(", "file_get_contents", "_sync(null", "Sync("):  # no sync I/O
            assert banned not in text, f"{name} uses {banned}"
    text = sources()["extension.js"]
    assert "export default class" in text and "enable()" in text and "disable()" in text


def test_no_preferences():
    # decided in gnome-extension/README.md: nothing to configure beyond the menu itself
    assert not (SRC / "prefs.js").exists() and not (SRC / "schemas").exists()
