"""The app factory: one aiohttp ``Application`` per emulator, built from an ``EmulatorConfig``.

One route table per concern (Messages and token counting, Message Batches, the emulator's own
``/_emulator/*`` routes); the state lives behind :data:`~emulator.state.STATE`, and anything
with a lifetime (the batches' background tasks) in ``cleanup_ctx``. A middleware makes every
error the API's JSON error, unknown paths (404) and wrong methods (405) included, and a crash
in a handler a 500 ``api_error`` instead of a dead connection; a response hook puts a
``request-id`` on every response.

Example:
    >>> app = build_app(EmulatorConfig())
    >>> app[STATE].config.host
    '127.0.0.1'
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from emulator import batches, control_routes, messages_route
from emulator.config import EmulatorConfig
from emulator.state import STATE, EmulatorState
from emulator.validation import ApiError
from emulator.wire_errors import error_response, new_request_id

__all__ = ["build_app"]

log = logging.getLogger("emulator")

_TYPE_OF_STATUS = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                   413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def build_app(config: EmulatorConfig | None = None) -> web.Application:
    """Build the emulator's application (not started).

    Args:
        config: The configuration; the defaults when None.

    Returns:
        An ``aiohttp`` application with its :class:`EmulatorState` at ``app[STATE]``.
    """
    config = config or EmulatorConfig()
    # aiohttp enforces the size while reading; the route turns its 413 into the API's error.
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_api_errors])
    state = app[STATE] = EmulatorState(config)
    app.add_routes(messages_route.routes)
    app.add_routes(control_routes.routes)
    batches.setup(app)
    state.stats.add_section("batches", lambda: app[batches.BATCHES].stats())
    app.on_response_prepare.append(_ensure_request_id)
    return app


@web.middleware
async def _api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as the API's JSON error; nothing escapes as a bare 500 page."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.error_type, exc.message, status=exc.status,
                              headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error_type = _TYPE_OF_STATUS.get(exc.status, "invalid_request_error"
                                         if exc.status < 500 else "api_error")
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(error_type, f"{exc.reason}: {request.method} {request.path}",
                              status=exc.status, headers=headers)
    except Exception:
        log.exception("emulator handler crashed on %s %s", request.method, request.path)
        return error_response("api_error", "Internal server error")


async def _ensure_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Every response carries ``request-id``, whichever route (or error) produced it."""
    if "request-id" not in response.headers:
        response.headers["request-id"] = new_request_id()
