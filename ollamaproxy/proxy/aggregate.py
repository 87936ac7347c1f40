"""Aggregated listings across healthy backends: /api/tags, /api/ps, /v1/models, deduplicated."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import aiohttp

from ollamaproxy.backends.health import Health
from ollamaproxy.backends.models import canonical_model
from ollamaproxy.backends.registry import Registry

log = logging.getLogger("ollamaproxy.backends")


def version_key(version: str) -> tuple[int, ...]:
    """Sortable numeric key for versions like "0.6.2" or "0.12.0-rc1"."""
    return tuple(int(part) for part in re.findall(r"\d+", version)[:4])


def _listable(registry: Registry, kinds: tuple[str, ...]) -> list[str]:
    return [s.id for s in registry.states.values()
            if s.enabled and s.health is Health.HEALTHY and s.config.kind in kinds]


async def _gather(registry: Registry, backend_ids: list[str], path: str) -> list[Any]:
    async def one(backend_id: str) -> Any:
        try:
            return await registry.fetch_listing(backend_id, path)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as error:
            log.warning(json.dumps({"event": "listing_failed", "backend": backend_id, "path": path,
                                    "reason": str(error)[:200] or type(error).__name__}))
            return None

    return list(await asyncio.gather(*(one(backend_id) for backend_id in backend_ids)))


def _details(family: str = "") -> dict:
    return {"parent_model": "", "format": "", "family": family, "families": [family] if family else None,
            "parameter_size": "", "quantization_level": ""}


def openai_model_tag(name: str, backend_id: str) -> dict:
    """An /api/tags entry for a model only an OpenAI-kind backend serves (reached through translation)."""
    return {"name": name, "model": name, "modified_at": "1970-01-01T00:00:00Z", "size": 0,
            "digest": "", "details": _details(), "remote_host": backend_id}


def openai_model_show(name: str, backend_id: str) -> dict:
    """An /api/show answer for such a model: what the proxy knows, no Modelfile."""
    return {"modelfile": "", "parameters": "", "template": "", "details": _details(),
            "model_info": {"general.architecture": "", "ollamaproxy.backend": backend_id,
                           "ollamaproxy.api": "openai"},
            "capabilities": ["completion"], "modified_at": "1970-01-01T00:00:00Z"}


def openai_only_backend(registry: Registry, model: str) -> str | None:
    """The OpenAI-kind backend serving `model` when no Ollama backend has (or, unlisted yet, may have) it."""
    owner = None
    for state in registry.states.values():
        if not state.enabled:
            continue
        if state.config.kind == "ollama":
            if state.inventory is None or model in state.inventory.models:
                return None
        elif owner is None and state.inventory is not None and model in state.inventory.models:
            owner = state.id
    return owner


async def ollama_listing(registry: Registry, path: str) -> dict:
    """Union of /api/tags or /api/ps over healthy Ollama backends; the first backend's entry wins.

    /api/tags also lists the models of healthy OpenAI-kind backends, which Ollama clients reach
    through translation.
    """
    seen: set[str] = set()
    merged: list[dict] = []
    for payload in await _gather(registry, _listable(registry, ("ollama",)), path):
        if not isinstance(payload, dict) or not isinstance(payload.get("models"), list):
            continue
        for entry in payload["models"]:
            name = entry.get("name") or entry.get("model") if isinstance(entry, dict) else None
            if not isinstance(name, str):
                continue
            key = canonical_model(name)
            if key not in seen:
                seen.add(key)
                merged.append(entry)
    if path == "/api/tags":
        for backend_id in _listable(registry, ("openai",)):
            state = registry.states[backend_id]
            for name in sorted(state.inventory.models if state.inventory else ()):
                if name not in seen:
                    seen.add(name)
                    merged.append(openai_model_tag(name, backend_id))
    return {"models": merged}


async def openai_models(registry: Registry) -> dict:
    """Union of /v1/models over every healthy backend (Ollama serves it too)."""
    seen: set[str] = set()
    merged: list[dict] = []
    for payload in await _gather(registry, _listable(registry, ("ollama", "openai")), "/v1/models"):
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            continue
        for entry in payload["data"]:
            ident = entry.get("id") if isinstance(entry, dict) else None
            if isinstance(ident, str) and ident not in seen:
                seen.add(ident)
                merged.append(entry)
    return {"object": "list", "data": merged}
