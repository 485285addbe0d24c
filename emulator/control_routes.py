"""``/_emulator/*``: the bill, reset, the received request bodies, and a health check.

These routes are the emulator's own (the API has nothing like them) and take no API key: the
emulator binds to loopback, and nothing here reveals a key (limits are shown by fingerprint).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emulator.state import STATE

__all__ = ["full_stats", "routes"]

routes = web.RouteTableDef()


def full_stats(app: web.Application) -> dict[str, Any]:
    """The stats snapshot plus the rate-limit buckets' current levels."""
    state = app[STATE]
    return {**state.stats.snapshot(), "rate_limits": state.limits.snapshot()}


@routes.get("/_emulator/health")
async def health(request: web.Request) -> web.Response:
    """Answers as soon as the server is up (``run_emulator`` waits for it)."""
    return web.json_response({"ok": True})


@routes.get("/_emulator/stats")
async def stats(request: web.Request) -> web.Response:
    """The bill and the counters (see :class:`~emulator.stats.Stats`)."""
    return web.json_response(full_stats(request.app))


@routes.post("/_emulator/reset")
async def reset(request: web.Request) -> web.Response:
    """Clear the bill, the counters, the prompt cache, the buckets and the received log."""
    request.app[STATE].reset()
    return web.json_response({"ok": True})


@routes.get("/_emulator/received")
async def received(request: web.Request) -> web.Response:
    """The latest ``POST /v1/messages`` bodies, oldest first."""
    return web.json_response(list(request.app[STATE].received))
