"""The streamed reply: Server-Sent Events exactly as the API sends them.

The event flow is in ``docs/messages-api.md`` §3.

Order: ``message_start`` (usage with the input side, ``output_tokens`` 1), then per block
``content_block_start`` -> one ``content_block_delta`` per output token (``text_delta`` or
``input_json_delta``) -> ``content_block_stop`` (a ``ping`` after the first block starts), then
``message_delta`` with the stop reason and the cumulative usage, then ``message_stop``. Every
event has its ``event:`` line (the SDK drops events without one).

Timing: headers and ``message_start`` go out at once; the first delta after the pace's time to
first token, the rest one per ``per_token_s``. Deltas that fall due together are written in
one write, so a fast stream costs a few writes, not one per token.

Billing: a completed stream bills its ``output_tokens``; a stream cut by the ``stream_error``
fault (an ``event: error`` after about half the deltas) or by the client going away bills the
deltas written so far (see :mod:`emulator.faults`).
"""

from __future__ import annotations

import asyncio
import json
from json.encoder import encode_basestring_ascii as _quote  # json.dumps' own C encoder

from aiohttp import web

from emulator.faults import FaultPlan
from emulator.output import Output
from emulator.state import Call, EmulatorState

__all__ = ["SSEWriter", "stream_reply"]

_SLACK_S = 0.001
"""Deltas due within this much of now are written without sleeping (timer granularity)."""
_TEXT_DELTA = ('event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
               '"delta":{"type":"text_delta","text":%s}}\n\n')
_JSON_DELTA = ('event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
               '"delta":{"type":"input_json_delta","partial_json":%s}}\n\n')
_PING = 'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = 'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP = 'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class SSEWriter:
    """Buffers events and writes them in batches; counts the deltas that reached the socket.

    Args:
        response: A prepared ``StreamResponse``.
    """

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._buffer: list[str] = []
        self._pending = 0
        self.written = 0
        """Deltas (output tokens) handed to the transport so far."""

    def event(self, name: str, data: dict[str, object]) -> None:
        """Queue one event (its ``type`` is ``name``)."""
        self._buffer.append(f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}"
                            "\n\n")

    def raw(self, text: str) -> None:
        """Queue pre-encoded event text."""
        self._buffer.append(text)

    def deltas(self, index: int, kind: str, pieces: list[str]) -> None:
        """Queue one delta per piece: one output token each."""
        template = _TEXT_DELTA if kind == "text" else _JSON_DELTA
        self._buffer.extend([template % (index, _quote(piece)) for piece in pieces])
        self._pending += len(pieces)

    async def flush(self) -> None:
        """Write what is queued."""
        if self._buffer:
            data = "".join(self._buffer).encode()
            self._buffer.clear()
            await self._response.write(data)
        self.written += self._pending
        self._pending = 0


async def stream_reply(request: web.Request, state: EmulatorState, call: Call, output: Output,
                       fault: FaultPlan, request_id: str) -> web.StreamResponse:
    """Send ``output`` as an SSE stream, bill it and settle its admission.

    The call has been validated and admitted and ``output`` produced; errors before this point
    are plain JSON errors with their HTTP status, as in the API.
    """
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
               "request-id": request_id, **state.headers(call)}
    response = web.StreamResponse(status=200, headers=headers)
    writer = SSEWriter(response)
    produced: int | None = None
    try:
        await response.prepare(request)
        writer.event("message_start", {"type": "message_start",
                                       "message": state.message(call, output, stream_start=True)})
        call.plan.commit()  # the response has begun: its cache entries are now visible
        cut = await _send_blocks(writer, state, call, output, fault)
        if cut:
            state.stats.stream_errors += 1
        else:
            writer.event("message_delta", _message_delta(state, call, output))
            writer.raw(_MESSAGE_STOP)
        await writer.flush()
        produced = writer.written if cut else output.output_tokens
        state.bill(call, produced)
        await response.write_eof()
    except ConnectionError:
        state.stats.client_aborts += 1  # the client went away: bill what reached it
    finally:
        if produced is None:
            produced = writer.written
            state.bill(call, produced)
        state.settle(call, produced)
    return response


async def _send_blocks(writer: SSEWriter, state: EmulatorState, call: Call, output: Output,
                       fault: FaultPlan) -> bool:
    """Write every block's events on pace; return True if a ``stream_error`` cut the stream."""
    loop = asyncio.get_running_loop()
    pace = state.latency.plan(call.spec.tier, output.tokens, extra_s=fault.extra_latency_s)
    error_at = output.tokens // 2 if fault.kind == "stream_error" else -1
    first_due = loop.time() + pace.ttft_s
    sent = 0
    for index, block in enumerate(output.blocks):
        writer.event("content_block_start", {"type": "content_block_start", "index": index,
                                             "content_block": block.start()})
        if index == 0:
            writer.raw(_PING)
        pieces = block.pieces
        if pace.instant and not sent <= error_at < sent + len(pieces):
            writer.deltas(index, block.kind, pieces)  # nothing to wait for: all at once
            sent += len(pieces)
        else:
            for piece in pieces:
                if sent == error_at:
                    _error_event(writer)
                    return True
                await _wait_until(writer, loop, first_due + sent * pace.per_token_s)
                writer.deltas(index, block.kind, [piece])
                sent += 1
        writer.raw(_STOP % index)
    if error_at >= 0:  # nothing was long enough to cut in the middle: fail at the end
        _error_event(writer)
        return True
    return False


async def _wait_until(writer: SSEWriter, loop: asyncio.AbstractEventLoop, due: float) -> None:
    """Flush what is queued and sleep until ``due``, unless it is (almost) due already."""
    delay = due - loop.time()
    if delay > _SLACK_S:
        await writer.flush()
        await asyncio.sleep(delay)


def _error_event(writer: SSEWriter) -> None:
    writer.event("error", {"type": "error",
                           "error": {"type": "overloaded_error", "message": "Overloaded"}})


def _message_delta(state: EmulatorState, call: Call, output: Output) -> dict[str, object]:
    """``message_delta``: the stop and the cumulative usage (output and the input side)."""
    usage = state.usage(call, output.output_tokens)
    del usage["cache_creation"], usage["service_tier"]  # not part of MessageDeltaUsage
    return {"type": "message_delta",
            "delta": {"stop_reason": output.stop_reason, "stop_sequence": output.stop_sequence},
            "usage": usage}
