"""Model names: canonical form and affinity pattern matching (pure)."""

from __future__ import annotations

import fnmatch


def canonical_model(name: str) -> str:
    """Lowercased name with Ollama's implicit `:latest` tag, so `Llama3.2` matches `llama3.2:latest`."""
    name = name.strip().lower()
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def matches_any(model: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """True when the model (canonical) matches one of the affinity patterns.

    A pattern without a tag also matches the tagged name, so `qwen3*` covers `qwen3:0.6b`
    and `llama3.2` covers `llama3.2:latest`.
    """
    for pattern in patterns:
        lowered = pattern.strip().lower()
        if fnmatch.fnmatchcase(model, lowered):
            return True
        if ":" not in lowered.rsplit("/", 1)[-1] and fnmatch.fnmatchcase(model, canonical_model(lowered)):
            return True
    return False
