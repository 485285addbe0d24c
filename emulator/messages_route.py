"""``POST /v1/messages`` (whole and streamed) and ``POST /v1/messages/count_tokens``.

Each request: authenticate (401) -> ``anthropic-version`` (400) -> read the body (413 over
``max_body_bytes``, 400 for garbage) -> log it in ``received`` -> draw its faults -> the core
(:class:`~emulator.state.EmulatorState`): validate, plan the cache, admit, respond, bill.
Errors before a stream starts are JSON errors with their HTTP status, as in the API; a stream
that has started can only fail with an ``event: error``.
"""

from __future__ import annotations

import json

from aiohttp import web

from emulator.sse import stream_reply
from emulator.state import STATE, Call, EmulatorState, Outcome
from emulator.tokens import count_input
from emulator.validation import ApiError, check_version, parse_body, validate_count
from emulator.wire_errors import new_request_id

__all__ = ["routes"]

routes = web.RouteTableDef()

_JSON = "application/json"


@routes.post("/v1/messages")
async def create_message(request: web.Request) -> web.StreamResponse:
    """``messages.create``: a whole ``Message`` as JSON, or an SSE stream when ``stream``."""
    state = request.app[STATE]
    state.stats.enter()
    status: int | None = None
    try:
        response = await _create(request, state)
        status = None if response is None else response.status
        return response if response is not None else web.Response()
    finally:
        state.stats.leave(status)


@routes.post("/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    """``messages.count_tokens``: ``{"input_tokens": N}``, the create's total input."""
    state = request.app[STATE]
    state.stats.count_tokens_requests += 1
    state.authenticate(request)
    version = check_version(request.headers.get("anthropic-version"))
    body = parse_body(await _read(request, state))
    validate_count(body, version, state.prices)
    return web.Response(body=json.dumps({"input_tokens": count_input(body)}).encode(),
                        content_type=_JSON, headers={"request-id": new_request_id()})


async def _create(request: web.Request, state: EmulatorState) -> web.StreamResponse | None:
    """The create pipeline; None when the connection was dropped on purpose."""
    request_id = new_request_id()
    try:
        key = state.fingerprint(state.authenticate(request))
        version = check_version(request.headers.get("anthropic-version"))
        body = parse_body(await _read(request, state))
    except ApiError as exc:
        return _json(state.error_outcome(exc, request_id, None))
    state.received.append(body)
    fault = state.faults.draw(stream=body.get("stream") is True)
    if fault.kind == "disconnect":
        _drop(request, state)
        return None
    if body.get("stream") is not True:
        outcome = await state.run_whole(key, body, version, fault=fault)
        if fault.kind == "lost_reply" and outcome.status == 200:
            state.stats.lost_replies += 1
            _drop(request, state, counted=True)  # billed by run_whole: the reply is lost
            return None
        return _json(outcome)
    call: Call | None = None
    try:
        call = state.prepare(key, body, version)
        state.admit(call)
        state.raise_injected(fault)
        output = await state.respond(call)
    except ApiError as exc:
        outcome = state.error_outcome(exc, request_id, call)
        if call is not None:
            state.settle(call, 0)
        return _json(outcome)
    return await stream_reply(request, state, call, output, fault, request_id)


async def _read(request: web.Request, state: EmulatorState) -> bytes:
    """The request body; 413 past ``max_body_bytes`` (checked before reading when declared)."""
    limit = state.config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None


def _too_large(limit: int) -> ApiError:
    return ApiError("request_too_large",
                    f"Request exceeds the maximum allowed number of bytes ({limit:,})")


def _drop(request: web.Request, state: EmulatorState, *, counted: bool = False) -> None:
    """Close the socket before a byte of response: the ``disconnect`` fault (not billed), or
    ``lost_reply`` (``counted``: billed and counted by the caller)."""
    if not counted:
        state.stats.disconnects += 1
    transport = request.transport
    if transport is not None:
        transport.abort()


def _json(outcome: Outcome) -> web.Response:
    return web.Response(status=outcome.status, body=json.dumps(outcome.body).encode(),
                        content_type=_JSON, headers=outcome.headers)
