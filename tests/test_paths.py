"""Path normalisation and blocked endpoints: bypass spellings cannot slip through."""

import pytest

from ollamaproxy.config import DEFAULT_BLOCKED_ENDPOINTS
from ollamaproxy.proxy.paths import BlockedEndpoints, normalise_path

BYPASSES = [
    "/api/pull", "//api//pull/", "/API/Pull", "/api/%70ull", "/api/./pull", "/api/x/../pull",
    "/api%2Fpull", "/api/%2570ull", "/api/pull?x=1", "/api/pull/", "///api/pull", "/api/PULL",
    "/api/blobs/sha256:abc", "/api/Blobs/sha256:abc", "/api/blobs", "/api/delete", "/api/copy",
    "/api/create", "/api/push", "/v1/../api/pull", "/api\\pull",
]


@pytest.mark.parametrize("path", BYPASSES)
def test_every_bypass_spelling_is_blocked(path):
    assert BlockedEndpoints(list(DEFAULT_BLOCKED_ENDPOINTS)).blocks(path) is not None


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/tags", "/v1/chat/completions", "/api/pullx",
                                  "/api/pul", "/"])
def test_ordinary_paths_pass(path):
    assert BlockedEndpoints(list(DEFAULT_BLOCKED_ENDPOINTS)).blocks(path) is None


def test_normalise_path_examples():
    assert normalise_path("//api//pull/") == "/api/pull"
    assert normalise_path("/api/./pull") == "/api/pull"
    assert normalise_path("/../../etc") == "/etc"
    assert normalise_path("") == "/"
