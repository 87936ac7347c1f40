"""Parse backend model listings (/api/tags, /api/ps, /v1/models) into an inventory (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ollamaproxy.backends.models import canonical_model


@dataclass(frozen=True)
class LoadedModel:
    """One model resident on a backend, as /api/ps reports it."""

    name: str
    size_vram: int = 0
    expires_at: str | None = None


@dataclass(frozen=True)
class Inventory:
    """What one backend serves and has loaded, keyed by canonical model name."""

    models: frozenset[str] = frozenset()
    loaded: dict[str, LoadedModel] = field(default_factory=dict)


def _entries(payload: Any, key: str) -> list[dict]:
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object with {key!r}")
    entries = payload.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f"{key!r} is not a list")
    return [entry for entry in entries if isinstance(entry, dict)]


def _entry_name(entry: dict) -> str | None:
    name = entry.get("name") or entry.get("model")
    return canonical_model(name) if isinstance(name, str) and name.strip() else None


def parse_ollama_tags(payload: Any) -> frozenset[str]:
    return frozenset(name for name in map(_entry_name, _entries(payload, "models")) if name)


def parse_ollama_ps(payload: Any) -> dict[str, LoadedModel]:
    loaded = {}
    for entry in _entries(payload, "models"):
        name = _entry_name(entry)
        if name:
            size_vram = entry.get("size_vram")
            expires = entry.get("expires_at")
            loaded[name] = LoadedModel(
                name=name,
                size_vram=size_vram if isinstance(size_vram, int) else 0,
                expires_at=expires if isinstance(expires, str) else None,
            )
    return loaded


def parse_openai_models(payload: Any) -> frozenset[str]:
    names = set()
    for entry in _entries(payload, "data"):
        ident = entry.get("id")
        if isinstance(ident, str) and ident.strip():
            names.add(canonical_model(ident))
    return frozenset(names)
