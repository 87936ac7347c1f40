"""Plain Python values to and from D-Bus variants (a{sv} rows; numbers that are not known travel as -1)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

from dbus_fast import Variant, unpack_variants

# Keys whose D-Bus type is not the one `_infer` would pick (counts are unsigned).
KEY_TYPES: dict[str, str] = {
    "cookie": "u",
    "in_flight": "u",
    "capacity": "u",
    "queued": "u",
}


def _infer(value: Any) -> str:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, enum.Enum):
        return _infer(value.value)
    if isinstance(value, int):
        return "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    if isinstance(value, Mapping):
        return "a{sv}"
    if isinstance(value, (list, tuple)):
        if all(isinstance(item, str) for item in value):
            return "as"
        if all(isinstance(item, Mapping) for item in value):
            return "aa{sv}"
        return "av"
    raise TypeError(f"no D-Bus type for {type(value).__name__} value {value!r}")


def _convert(value: Any, signature: str) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    if signature == "a{sv}":
        return vardict(value)
    if signature == "aa{sv}":
        return [vardict(item) for item in value]
    if signature == "av":
        return [to_variant(item) for item in value]
    if signature == "as":
        return [str(item) for item in value]
    if signature == "d":
        return float(value)
    if signature in ("u", "t"):
        return max(0, int(value))
    if signature in ("x", "i"):
        return int(value)
    return value


def to_variant(value: Any, signature: str | None = None) -> Variant:
    signature = signature or _infer(value)
    return Variant(signature, _convert(value, signature))


def vardict(values: Mapping[str, Any], types: Mapping[str, str] | None = None) -> dict[str, Variant]:
    """An a{sv} from a plain dict; None values are left out (D-Bus has no null)."""
    types = KEY_TYPES if types is None else {**KEY_TYPES, **types}
    return {str(key): to_variant(value, types.get(key)) for key, value in values.items() if value is not None}


def vardicts(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Variant]]:
    return [vardict(row) for row in rows]


def plain(value: Any) -> Any:
    """Variants (at any depth) to plain Python values."""
    return unpack_variants(value)
