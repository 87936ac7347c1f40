"""Small sysfs file helpers shared by the sysfs-backed sources (text, integers, link targets)."""

from __future__ import annotations

import os
import re
from pathlib import Path

PCI_ADDRESS = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


def read_text(path: Path) -> str | None:
    """The stripped content of a sysfs attribute, or None when it does not exist.

    Other OS errors (EIO, EPERM, ENODATA from a sleeping device) propagate: they are failures.
    """
    try:
        return path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None or text == "":
        return None
    return int(text, 0)


def link_name(path: Path) -> str | None:
    """The last component of a symlink's target (a device's `driver` or `device` link), or None."""
    if not os.path.islink(path):
        return None
    return os.path.basename(os.path.realpath(path))


def normalise_bus_id(text: str | None) -> str | None:
    """"00000000:01:00.0" (NVML) or "0000:01:00.0" (sysfs) → "0000:01:00.0"; None if not PCI."""
    if not text:
        return None
    text = text.strip().lower()
    if not PCI_ADDRESS.match(text):
        return None
    domain, rest = text.split(":", 1)
    return f"{int(domain, 16):04x}:{rest}"


def pci_parent(device_dir: Path) -> Path | None:
    """The PCI device a sysfs device sits on: its `device` link target when that is a PCI address."""
    target = device_dir / "device"
    try:
        resolved = target.resolve(strict=True)
    except (FileNotFoundError, OSError, RuntimeError):
        return None
    return resolved if PCI_ADDRESS.match(resolved.name) else None
