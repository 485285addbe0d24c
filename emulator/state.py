"""The emulator's state and its non-streaming core: validate -> cache plan -> admit -> respond
-> bill.

One :class:`EmulatorState` per app, behind the typed key :data:`STATE` (no module globals).
The Messages route, the stream writer and the batches module all go through the steps here,
so a streamed call, a whole call and a batch call are validated, cached, limited and billed
the same way.

Example (inside a handler):
    >>> state = request.app[STATE]  # doctest: +SKIP
    >>> status, body = await state.complete("sk-ant-...", params, batch=True)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from actors.tiers import ModelSpec, load_price_table
from emulator.config import EmulatorConfig
from emulator.faults import NO_FAULT, FaultInjector, FaultPlan
from emulator.latency import LatencyModel
from emulator.output import Output, shape
from emulator.prompt_cache import CachePlan, PromptCache, validate_breakpoints
from emulator.ratelimits import Admission, Limits, RateLimitBook
from emulator.responders import Responders
from emulator.stats import Stats
from emulator.tokens import count_and_check, segments
from emulator.validation import ApiError, validate_create
from emulator.wire_errors import STATUS_OF, error_body, new_request_id

__all__ = ["STATE", "Call", "EmulatorState", "Outcome"]


@dataclass(slots=True)
class Call:
    """One validated Messages request on its way through the core."""

    body: dict[str, Any]
    spec: ModelSpec
    key: str
    """The API key's fingerprint (the raw key is never kept)."""
    plan: CachePlan
    batch: bool
    admission: Admission | None = None

    @property
    def model(self) -> str:
        """The requested model id."""
        return self.body["model"]

    @property
    def limited_input(self) -> int:
        """What the input-tokens limit counts: uncached input plus cache writes, not reads."""
        return self.plan.input_tokens + self.plan.cache_write_5m + self.plan.cache_write_1h


@dataclass(slots=True)
class Outcome:
    """A whole (non-streaming) answer: status, JSON body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class EmulatorState:
    """Everything one emulator knows: config, prices, limits, cache, bill, responders.

    Args:
        config: The emulator's configuration.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.prices = load_price_table(config.price_table)
        self._limits = RateLimitBook(config.limits_for)
        # With no limit configured the book could only say yes, and without headers: skip it
        # on the hot path (about a tenth of a request's cost), until a book is swapped in.
        self._skip_limits = config.limits == Limits() and not config.limits_by_tier
        self.cache = PromptCache()
        self.stats = Stats(self.prices)
        self.responders = Responders()
        self.latency = LatencyModel(profile=config.profile, latency_s=config.latency_s,
                                    seed=config.seed)
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.received: deque[dict[str, Any]] = deque(maxlen=config.received_log_size)
        """The latest Messages request bodies, oldest first, for tests to inspect."""
        self.on_reset: list[Callable[[], None]] = []
        """Called by :meth:`reset` after the built-in parts are cleared."""
        self._keys = frozenset(config.api_keys) if config.api_keys is not None else None
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4)

    @property
    def limits(self) -> RateLimitBook:
        """The rate-limit book (tests may swap in one on a fake clock)."""
        return self._limits

    @limits.setter
    def limits(self, book: RateLimitBook) -> None:
        self._limits = book
        self._skip_limits = False  # a book put here on purpose is always consulted

    # --- who is calling ----------------------------------------------------------------

    def authenticate(self, request: web.Request) -> str:
        """The caller's API key, from ``x-api-key`` or ``Authorization: Bearer``.

        Raises:
            ApiError: 401 ``authentication_error`` when it is missing, empty, or not one of
                ``config.api_keys``.
        """
        headers = request.headers
        key = headers.get("x-api-key")
        if not key:
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key:
            raise ApiError("authentication_error", "x-api-key header is required")
        if self._keys is not None and key not in self._keys:
            raise ApiError("authentication_error", "invalid x-api-key")
        return key

    def fingerprint(self, key: str) -> str:
        """A stable stand-in for ``key`` (sha256 prefix): limits and caches are keyed by it.

        Computed each time (about a microsecond) rather than memoised, so the raw key is
        never kept, not even as a dictionary key.
        """
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    # --- the steps ---------------------------------------------------------------------

    def prepare(self, key: str, body: dict[str, Any], version: str | None, *,
                batch: bool = False) -> Call:
        """Validate and plan the prompt cache (step 1 of every call).

        Args:
            key: The caller's key fingerprint.
            body: The decoded request.
            version: The ``anthropic-version`` (None for batch requests).
            batch: Part of a Message Batch.

        Raises:
            ApiError: 400/404 for an invalid request, a prompt over the context window or
                bad cache breakpoints.
        """
        spec = validate_create(body, version, self.prices)
        total, marked = count_and_check(body)
        if marked:
            segs = segments(body)
            auto = body.get("cache_control")
            try:
                validate_breakpoints(segs, auto)
            except ValueError as exc:
                raise ApiError("invalid_request_error", str(exc)) from None
            self._check_window(total, spec)
            floor = self.config.min_cacheable_tokens
            plan = self.cache.plan(key=key, model=body["model"], segments=segs, auto=auto,
                                   min_cacheable=spec.min_cacheable_tokens if floor is None
                                   else floor)
        else:
            # No breakpoint: nothing can be read or written, so skip hashing the prompt.
            self._check_window(total, spec)
            plan = CachePlan(input_tokens=total, cache_write_5m=0, cache_write_1h=0,
                             cache_read=0)
        return Call(body, spec, key, plan, batch)

    def admit(self, call: Call) -> None:
        """Take the call's share of the rate limits (step 2; batches are not limited).

        Raises:
            ApiError: 429 ``rate_limit_error`` with the book's message and headers.
        """
        if call.batch or self._skip_limits:
            return
        adm = self.limits.admit(key=call.key, model_class=call.spec.tier,
                                input_tokens=call.limited_input,
                                max_tokens=call.body["max_tokens"])
        if not adm.ok:
            self.stats.rate_limited[adm.limit_kind or "requests"] += 1
            raise ApiError("rate_limit_error", adm.message, headers=adm.headers())
        call.admission = adm

    async def respond(self, call: Call) -> Output:
        """Ask the responder and cut its reply to the request's limits (step 3)."""
        reply = await self.responders.reply(call.body)
        return shape(reply.content, max_tokens=call.body["max_tokens"],
                     stop_sequences=call.body.get("stop_sequences"),
                     stop_reason=reply.stop_reason)

    def bill(self, call: Call, output_tokens: int) -> None:
        """Add the call to the bill (step 4): its whole input and ``output_tokens``."""
        plan = call.plan
        self.stats.bill(call.model, batch=call.batch, input_tokens=plan.input_tokens,
                        output_tokens=output_tokens, cache_write_5m=plan.cache_write_5m,
                        cache_write_1h=plan.cache_write_1h, cache_read=plan.cache_read)

    def settle(self, call: Call, output_tokens: int) -> None:
        """Give back the unused output reservation and the concurrency slot."""
        if call.admission is not None:
            call.admission.settle(output_tokens)

    def headers(self, call: Call | None) -> dict[str, str]:
        """The rate-limit headers of the call's admission, as they stand now."""
        if call is None or call.admission is None:
            return {}
        return call.admission.headers()

    # --- the whole (non-streaming) answer ---------------------------------------------

    async def complete(self, api_key: str, body: dict[str, Any], *,
                       batch: bool = False) -> tuple[int, dict[str, Any]]:
        """Answer one non-streaming request; return (HTTP status, message or error body).

        Used by the batches module (``batch=True``: no rate limits, no latency, no faults,
        billed at the batch discount, ``usage.service_tier`` ``"batch"``).

        Args:
            api_key: The caller's raw key (fingerprinted here, never stored).
            body: The request's parameters.
            batch: Part of a Message Batch.
        """
        outcome = await self.run_whole(self.fingerprint(api_key), body, None, batch=batch)
        return outcome.status, outcome.body

    async def run_whole(self, key: str, body: dict[str, Any], version: str | None, *,
                        batch: bool = False, fault: FaultPlan = NO_FAULT) -> Outcome:
        """The non-streaming pipeline, every error turned into the API's error body."""
        request_id = new_request_id()
        call: Call | None = None
        produced = 0
        try:
            call = self.prepare(key, body, version, batch=batch)
            self.admit(call)
            self.raise_injected(fault)
            output = await self.respond(call)
            await self._wait(call, output, fault)
            produced = output.output_tokens
            self.bill(call, produced)
            message = self.message(call, output)
            # Headers are read before the finally settles, as a stream's are: the whole
            # max_tokens still shows as reserved, like the API's captured headers (§6.2).
            return Outcome(200, message, {"request-id": request_id, **self.headers(call)})
        except ApiError as exc:
            return self.error_outcome(exc, request_id, call)
        finally:
            if call is not None:
                self.settle(call, produced)

    def error_outcome(self, exc: ApiError, request_id: str, call: Call | None) -> Outcome:
        """An :class:`ApiError` as an outcome, with the call's rate-limit headers."""
        headers = {"request-id": request_id, **self.headers(call), **exc.headers}
        status = exc.status or STATUS_OF.get(exc.error_type, 500)
        if status == 500:
            self.stats.server_errors += 1
        elif status == 529:
            self.stats.overloaded += 1
        return Outcome(status, error_body(exc.error_type, exc.message, request_id), headers)

    def message(self, call: Call, output: Output, *, stream_start: bool = False) -> dict[str, Any]:
        """The ``Message`` JSON of a reply (empty content and no stop for ``message_start``)."""
        return {
            "id": self.next_message_id(),
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [] if stream_start else [b.whole() for b in output.blocks],
            "stop_reason": None if stream_start else output.stop_reason,
            "stop_sequence": None if stream_start else output.stop_sequence,
            "usage": self.usage(call, 1 if stream_start else output.output_tokens),
        }

    def usage(self, call: Call, output_tokens: int) -> dict[str, Any]:
        """The ``usage`` object: the cache split, output tokens and service tier."""
        plan = call.plan
        return {
            "input_tokens": plan.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": plan.cache_write_5m + plan.cache_write_1h,
            "cache_read_input_tokens": plan.cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": plan.cache_write_5m,
                               "ephemeral_1h_input_tokens": plan.cache_write_1h},
            "service_tier": "batch" if call.batch else "standard",
        }

    def next_message_id(self) -> str:
        """A fresh ``msg_`` id (a counter: unique within the run and cheap)."""
        return f"msg_01{self._id_prefix}{next(self._ids):014x}"

    def reset(self) -> None:
        """Clear the bill, the caches, the buckets and the received log."""
        self.stats.reset()
        self.cache.reset()
        self.limits.reset()
        self.received.clear()
        for hook in self.on_reset:
            hook()

    # --- internals ----------------------------------------------------------------------

    def _check_window(self, total: int, spec: ModelSpec) -> None:
        if total > spec.context_window:
            raise ApiError("invalid_request_error",
                           f"prompt is too long: {total} tokens > {spec.context_window} maximum")

    def raise_injected(self, fault: FaultPlan) -> None:
        """Raise the error an ``overloaded`` or ``server_error`` fault stands for."""
        if fault.kind == "overloaded":
            raise ApiError("overloaded_error", "Overloaded")
        if fault.kind == "server_error":
            raise ApiError("api_error", "Internal server error")

    async def _wait(self, call: Call, output: Output, fault: FaultPlan) -> None:
        """Take the reply's latency; the cache entry appears once the response begins."""
        if call.batch:
            call.plan.commit()
            return
        pace = self.latency.plan(call.spec.tier, output.tokens, extra_s=fault.extra_latency_s)
        if pace.ttft_s > 0:
            await asyncio.sleep(pace.ttft_s)
        call.plan.commit()
        rest = pace.total - pace.ttft_s
        if rest > 0:
            await asyncio.sleep(rest)


STATE: web.AppKey[EmulatorState] = web.AppKey("emulator_state", EmulatorState)
