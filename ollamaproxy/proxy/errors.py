"""JSON error bodies in each API's own shape: Ollama on /api/*, OpenAI on /v1/*."""

from __future__ import annotations

import json

from aiohttp import web

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """An error answer decided by the proxy: HTTP status, a machine code and a readable message."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def parse_json_object(raw: bytes) -> dict:
    """A request body that must be a JSON object; ApiError(400) says what is wrong with it."""
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    return payload


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") or path == "/v1"


def error_body(path: str, error: ApiError) -> dict:
    if is_openai_path(path):
        body = {
            "error": {
                "message": error.message,
                "type": _OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error"),
                "code": error.code,
            }
        }
        if error.details:
            body["error"]["details"] = error.details
        return body
    body = {"error": error.message, "code": error.code}
    if error.details:
        body["details"] = error.details
    return body


def error_response(path: str, error: ApiError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(error.headers)
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        status=error.status,
        body=json.dumps(error_body(path, error)).encode(),
        content_type="application/json",
        headers=headers,
    )


def stream_error_line(path: str, message: str) -> bytes:
    """A final in-band error for a stream already started (NDJSON line or SSE event)."""
    if is_openai_path(path):
        payload = {"error": {"message": message, "type": "server_error", "code": "backend_stream_failed"}}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"
    return json.dumps({"error": message}).encode() + b"\n"
