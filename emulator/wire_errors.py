"""Error responses exactly as the API shapes them, and request ids.

Body: ``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": "req_..."}``,
with the same id in the ``request-id`` header (``docs/messages-api.md`` §2).
"""

from __future__ import annotations

import json
import secrets

from aiohttp import web

STATUS_OF = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def new_request_id() -> str:
    """A fresh ``req_...`` id, shaped like the API's."""
    return "req_" + secrets.token_hex(12)


def error_body(error_type: str, message: str, request_id: str) -> dict[str, object]:
    """The JSON body of an error (also the payload of an in-stream ``error`` event)."""
    return {"type": "error", "error": {"type": error_type, "message": message},
            "request_id": request_id}


def error_response(
    error_type: str,
    message: str,
    *,
    request_id: str | None = None,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Build the error response for ``error_type`` (status from the API's table by default)."""
    request_id = request_id or new_request_id()
    return web.Response(
        status=status or STATUS_OF[error_type],
        body=json.dumps(error_body(error_type, message, request_id)),
        content_type="application/json",
        headers={"request-id": request_id, **(headers or {})},
    )
