"""Test access to the real llama.cpp backend: the product's LlamaCppServer, failing loudly when unavailable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ollamaproxy.llamacpp import DEFAULT_ALIAS, BackendUnavailable, LlamaCppServer, fetch_model, require_xllamacpp

__all__ = ["DEFAULT_ALIAS", "LlamaCppServer", "model_path", "start_server"]


def unavailable(reason: str):
    """Fail (default, CI) or skip loudly (OLLAMAPROXY_ALLOW_SKIP=1) the current test."""
    if os.environ.get("OLLAMAPROXY_ALLOW_SKIP", "") == "1":
        pytest.skip(f"!!! REAL llama.cpp TESTS NOT RUN: {reason} (OLLAMAPROXY_ALLOW_SKIP=1)")
    pytest.fail(f"{reason}. The llama.cpp tests must run for real; run scripts/test.sh, "
                "or set OLLAMAPROXY_ALLOW_SKIP=1 to skip them locally.", pytrace=False)


def model_path() -> Path:
    """The SmolLM2 GGUF (fetched into OLLAMAPROXY_MODEL_DIR on first use)."""
    try:
        return fetch_model()
    except BackendUnavailable as error:
        unavailable(str(error))


def start_server(**kw) -> LlamaCppServer:
    try:
        require_xllamacpp()
    except BackendUnavailable as error:
        unavailable(str(error))
    return LlamaCppServer(model_path(), **kw).start(timeout=60)
