"""One HTTP attempt against the Messages API, whole or streamed, and nothing else.

The SDK call happens inside one error-translating boundary (``_translated``): SDK exceptions
hold the request headers, and so the API key, so they never leave this module; what leaves is an
``Attempt`` with plain fields and, on failure, a ``CallFailed`` carrying status, error type,
request id and message (``docs/reliability.md`` §4). The whole and streamed paths share the
content and usage mappers.

Usage of a stream cut short: the input side comes from ``message_start``; the output side is
the number of deltas received, because the emulator sends one token per delta and bills the
tokens it sent (on the real API each delta carries at least one token, so this is a lower bound).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.errors import (
    CallFailed,
    ConnectionFailed,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    RequestRejected,
)
from actors.messages import ContentBlock, TextBlock, TextDelta, ToolUseBlock, Usage
from actors.retry_policy import server_retry_after

if TYPE_CHECKING:  # imported where used: a driver imports this module but never calls the API,
    import anthropic  # and the SDK takes ~1.5 s to import on 2 cores (docs/performance.md)

    from actors.messages_post import MessagesPost

_KEPT_HEADERS = frozenset(("request-id", "retry-after", "retry-after-ms", "x-should-retry"))
_NO_USAGE = Usage()
"""An attempt's usage until it has one (frozen, so one instance serves them all)."""


@dataclass
class Attempt:
    """What one HTTP attempt produced: a reply or an error, and what it used."""

    started_at: float = field(default_factory=time.time)
    _t0: float = field(default_factory=time.monotonic)
    content: tuple[ContentBlock, ...] = ()
    stop_reason: str | None = None
    usage: Usage = _NO_USAGE
    headers: dict[str, str] = field(default_factory=dict)
    """Rate-limit headers, request id and retry hints only (never the request's headers)."""
    error: CallFailed | None = None
    error_code: str | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    delivered: bool = False
    """A stream passed at least one delta to the caller (so it must not be retried)."""
    sent: bool = False
    """The request left this process (the server may run and bill it)."""
    started_usage: Usage | None = None
    """The input side of a stream's usage, from ``message_start``."""
    deltas: int = 0
    """Deltas received so far on a stream (one output token each on the emulator)."""
    possibly_billed: bool = False
    """Sent, and no answer came back (connection lost, timeout): the API may have run and
    billed it, so ``usage`` is the attempt's reservation, an upper bound of that bill."""

    @property
    def status(self) -> int | None:
        """HTTP status: 200 when answered, the error's status, or None without a response."""
        return 200 if self.error is None else self.error.status

    @property
    def request_id(self) -> str | None:
        return self.headers.get("request-id")

    def partial_usage(self) -> Usage | None:
        """What a stream cut short used so far: its input, and one token per delta received."""
        if self.started_usage is None:
            return None
        return self.started_usage.model_copy(update={"output_tokens": self.deltas})

    def unanswered(self, input_estimate: int, max_tokens: int) -> None:
        """Mark a sent attempt that got no answer as possibly billed, at its reservation.

        The input side is the estimate the limiter reserved; the output side is all of
        ``max_tokens``, because the server may have finished the reply we never read
        (``docs/reliability.md`` §1). A stream cut after ``message_start`` did get an answer:
        it keeps what it received (its input, one token per delta), as the API bills it.
        """
        if not self.sent or self.status is not None or self.started_usage is not None:
            return
        self.possibly_billed = True
        self.usage = Usage(input_tokens=input_estimate, output_tokens=max_tokens)

    def finish(self) -> Attempt:
        """Stamp the latency; returns self for chaining."""
        self.latency_s = time.monotonic() - self._t0
        return self


def keep_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Copy the headers the limiter and retry loop need: rate limits, retry hints, request id."""
    kept = {}
    for name, value in headers.items():
        low = name.lower()
        if low in _KEPT_HEADERS or low.startswith("anthropic-ratelimit-"):
            kept[low] = value
    return kept


def map_content(blocks: Any) -> tuple[ContentBlock, ...]:
    """The API's content blocks to ours (text and tool_use; other kinds are dropped): the
    SDK's block objects (a stream's final message, a batch result) or the reply's JSON."""
    out: list[ContentBlock] = []
    for block in blocks:
        field_of = block.get if isinstance(block, dict) else functools.partial(getattr, block)
        kind = field_of("type")
        if kind == "text":
            out.append(TextBlock(text=field_of("text")))
        elif kind == "tool_use":
            out.append(ToolUseBlock(id=field_of("id"), name=field_of("name"),
                                    input=dict(field_of("input") or {})))
    return tuple(out)


_BY_STATUS: dict[int, type[CallFailed]] = {402: QuotaExhausted, 429: RateLimited}


def _failure(exc: anthropic.APIError) -> tuple[CallFailed, dict[str, str], str | None]:
    """Translate one SDK exception into our error, its kept headers and its error code."""
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        headers = keep_headers(exc.response.headers)
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        error_type = error.get("type") or "api_error"
        code = (error.get("details") or {}).get("error_code")
        message = str(error.get("message") or f"HTTP {exc.status_code}")
        fields = {"status": exc.status_code, "error_type": error_type,
                  "request_id": headers.get("request-id") or body.get("request_id")}
        cls = _BY_STATUS.get(exc.status_code)
        if cls is None:
            cls = Overloaded if exc.status_code >= 500 or exc.status_code in (408, 409) \
                else RequestRejected
        if code == "enforced_spend_limit_reached":
            cls = QuotaExhausted
        if cls is RateLimited:
            return RateLimited(message, retry_after=server_retry_after(headers), **fields), \
                headers, code
        return cls(message, **fields), headers, code
    kind = "timeout" if isinstance(exc, anthropic.APITimeoutError) else "connection_error"
    return ConnectionFailed(f"no response from the API ({kind})", error_type=kind), {}, None


def _never_connected(exc: BaseException) -> bool:
    """Whether ``exc`` failed before a connection existed (refused, unresolvable, connect
    timeout): then the request never left and cannot have been billed. The SDK's transport
    wraps those and a server that drops a connection alike (``ConnectError``), so the cause
    chain is read for aiohttp's own connector errors."""
    import aiohttp  # where used: a driver imports this module, and aiohttp costs ~0.5 s

    kinds = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
    seen: BaseException | None = exc
    for _ in range(5):  # the SDK's, the transport's and aiohttp's own: a short chain
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _translated(attempt: Attempt) -> Iterator[None]:
    """Record any SDK or transport failure on ``attempt`` instead of raising it.

    Transport errors (``httpx2``) are caught too: the SDK does not wrap those raised while a
    stream is read, and they hold the request, so the key, in ``.request.headers``.
    """
    import anthropic
    import httpx2

    try:
        yield
    except anthropic.APIResponseValidationError as exc:
        # A 200 the SDK could not parse: the call was billed, so retrying would pay twice.
        attempt.error = RequestRejected(f"the API's response did not validate: {exc.message}",
                                        status=exc.status_code, error_type="invalid_response")
    except anthropic.APIError as exc:
        attempt.error, headers, attempt.error_code = _failure(exc)
        if _never_connected(exc):
            attempt.sent = False  # no connection, so no request: the server cannot bill it
        attempt.headers.update(headers)
        if isinstance(exc, anthropic.APIStatusError) and exc.status_code == 200:
            # An ``event: error`` inside a 200 stream: the SDK reports the stream's status;
            # class it by its error type as the HTTP error would be.
            attempt.error = _in_stream_error(attempt.error)
    except httpx2.HTTPError as exc:
        kind = "timeout" if isinstance(exc, httpx2.TimeoutException) else "connection_error"
        attempt.sent = attempt.sent and not _never_connected(exc)
        attempt.error = ConnectionFailed(f"the connection failed ({kind})", error_type=kind)


translated = _translated
"""The same boundary for other SDK calls (the Message Batches endpoints)."""


def _in_stream_error(error: CallFailed) -> CallFailed:
    """Class an in-stream error event by its type; only transient kinds may be retried."""
    status = {"overloaded_error": 529, "api_error": 500, "rate_limit_error": 429}.get(
        error.error_type or "")
    if status is None:
        return RequestRejected(error.message, status=400, error_type=error.error_type,
                               request_id=error.request_id)
    cls = RateLimited if status == 429 else Overloaded
    return cls(error.message, status=status, error_type=error.error_type,
               request_id=error.request_id)


async def send(post: MessagesPost, params: dict[str, Any], attempt: Attempt) -> Attempt:
    """Make one non-streaming attempt, filling ``attempt`` (the caller keeps it on cancel).

    Through the agent's client (its key, headers, connection pool, timeouts and error classes),
    but with the request built once per client (``actors/messages_post.py``), the body encoded
    here and the reply's JSON read into our types: the SDK's request building, request options,
    body encoding and ``Message`` model cost about half of what an agent host spends per call
    (``docs/performance.md``). The bytes on the wire are the SDK's own.
    """
    with _translated(attempt):
        attempt.sent = True
        headers, body = await post.post(_encoded(params))
        attempt.headers.update(keep_headers(headers))
        try:
            message = json.loads(body)
            attempt.content = map_content(message["content"])
            attempt.stop_reason = message.get("stop_reason")
            attempt.usage = Usage.from_api(message["usage"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # A 200 we cannot read: the call was billed, so retrying would pay twice.
            attempt.error = RequestRejected(
                f"the API's response did not validate ({type(exc).__name__})",
                status=200, error_type="invalid_response")
    return attempt.finish()


_BODY_ORDER = ("max_tokens", "messages", "model", "cache_control", "container", "diagnostics",
               "inference_geo", "metadata", "output_config", "service_tier", "speed",
               "stop_sequences", "stream", "system", "thinking", "tool_choice", "tools")
"""The order ``messages.create`` writes its body's fields in (its ``body={...}``)."""


def _encoded(params: dict[str, Any]) -> bytes:
    """The request body as ``messages.create`` encodes it (``anthropic._utils._json``): its
    fields in its order, compact JSON, UTF-8, no NaN."""
    ordered = {k: params[k] for k in _BODY_ORDER if k in params}
    if len(ordered) < len(params):
        ordered.update(params)  # a field the SDK does not know goes last, as extra_body would
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode()


async def stream(client: anthropic.AsyncAnthropic, params: dict[str, Any],
                 attempt: Attempt) -> AsyncIterator[TextDelta]:
    """Make one streaming attempt, yielding text deltas and filling ``attempt`` as they arrive.

    On a failure or a cancellation, ``attempt`` holds what the stream used so far.
    """
    with _translated(attempt):
        attempt.sent = True
        async with client.messages.stream(**params) as st:
            attempt.headers.update(keep_headers(st.response.headers))
            async for event in st:
                if event.type == "message_start":
                    attempt.started_usage = Usage.from_api(event.message.usage)
                elif event.type == "content_block_delta":
                    attempt.deltas += 1
                    if attempt.ttft_s is None:
                        attempt.ttft_s = time.monotonic() - attempt._t0
                    if event.delta.type == "text_delta":
                        attempt.delivered = True
                        yield TextDelta(text=event.delta.text)
            final = await st.get_final_message()
            attempt.content = map_content(final.content)
            attempt.stop_reason = final.stop_reason
            attempt.usage = Usage.from_api(final.usage)
    if attempt.error is not None:
        attempt.usage = attempt.partial_usage() or attempt.usage
    attempt.finish()
