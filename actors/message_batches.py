"""Message Batches on an Agent: many independent requests at half the price, answered later.

Why: a map phase sends thousands of independent requests whose answers nobody waits for one by
one. The Batches API bills them at the price table's ``batch_discount`` (50 %), under limits of
its own (``docs/messages-api.md`` §6), and answers within hours (usually minutes). An Agent
submits a batch through the SDK's ``client.messages.batches`` (:meth:`BatchRunner.submit`),
then polls it with backoff and records every result in the Ledger with ``source="batch"``
(:meth:`BatchRunner.collect`). Two calls, not one, so the caller can store the batch id before
waiting: a resumed run collects the batches it already paid for instead of sending them again.

Results come back per request: ``succeeded`` ones as replies at the batch price; ``errored``,
``canceled`` and ``expired`` ones as outcomes without a reply, for the caller to send again as
normal calls. A run with a budget reserves the whole batch's worst case (at the batch price)
before it is created, so a batch can never take a run past its cap.

Example:
    >>> items = [("c0", AskRequest(prompt="..."))]
    >>> batch_id = await agent.submit_batch.remote(items)                 # doctest: +SKIP
    >>> results = await agent.collect_batch.remote(batch_id, items)       # doctest: +SKIP
    >>> [(r.custom_id, r.outcome, r.reply.cost_usd) for r in results]     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from actors import api_call
from actors.api_call import Attempt
from actors.errors import ConfigError
from actors.frozen import Frozen
from actors.messages import AskRequest, CallRecord, Reply, TextBlock, Usage
from actors.token_estimate import estimate_input_tokens

if TYPE_CHECKING:
    from actors.agent import Agent, _CallContext

__all__ = ["BATCH_MAX_REQUESTS", "BatchResult", "BatchRunner"]

BATCH_MAX_REQUESTS = 10_000
"""Most requests raytroupe puts in one batch (the API takes 100,000): smaller batches end
sooner, so their results reach the reducer while later batches still run."""
POLL_FIRST_S = 0.25
"""First wait between polls; each next wait is 1.5x longer, up to :data:`POLL_MAX_S`."""
POLL_MAX_S = 60.0
_RESERVE_TTL_S = 26 * 3600.0
"""A batch's budget reservation outlives the API's 24 h processing window."""

T = TypeVar("T")
Outcome = Literal["succeeded", "errored", "canceled", "expired"]


class BatchResult(Frozen):
    """One request's result from a batch: a reply, or why there is none."""

    kind: Literal["batch_result"] = "batch_result"
    custom_id: str
    outcome: Outcome
    reply: Reply | None = None
    """The reply of a ``succeeded`` request, priced at the batch discount."""
    error: str | None = None
    """The API's error type of an ``errored`` request."""


class BatchRunner:
    """Submits and collects Message Batches for one Agent (its client, Ledger and prices)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._reserved: dict[str, tuple[str, str]] = {}
        """batch id -> (run id, reservation id), released once the batch is recorded."""

    async def submit(self, items: Sequence[tuple[str, AskRequest]]) -> str:
        """Create one batch of ``items`` (custom id, request); return its id.

        Raises:
            ConfigError: no items, too many, or a request the batch API cannot take.
            BudgetExceeded: the batch's worst case would take the run past its cap.
            CallFailed: the API refused the batch after the retry policy gave up.
        """
        if not 1 <= len(items) <= BATCH_MAX_REQUESTS:
            raise ConfigError(f"a batch takes 1 to {BATCH_MAX_REQUESTS:,} requests, "
                              f"got {len(items):,}")
        agent = self.agent
        bodies, worst = [], Decimal(0)
        for custom_id, request in items:
            if request.speculative not in (None, 1) or request.output_schema or request.check:
                raise ConfigError("batch requests cannot speculate or be validated: "
                                  f"{custom_id!r} asks to")
            ctx = agent._context(request, agent._route(request))
            params = agent._params(request, agent._messages(request), model=ctx.model)
            params.pop("tools", None)  # a batch request is answered once: no tool loop
            bodies.append({"custom_id": custom_id, "params": params})
            worst += agent._worst_case_usd(ctx, estimate_input_tokens(params))
        run_id = items[0][1].run_id or agent.spec.run_id
        reservation = await self._reserve(run_id, worst)
        try:
            batch = await self._api(lambda: agent.client.messages.batches.create(
                requests=bodies))  # type: ignore[arg-type]
        except BaseException:
            if reservation is not None:
                agent.backend.ledger.release.remote(run_id, reservation, 0)
            raise
        if reservation is not None:
            self._reserved[batch.id] = (run_id, reservation)
        return str(batch.id)

    async def collect(self, batch_id: str, items: Sequence[tuple[str, AskRequest]]
                      ) -> list[BatchResult]:
        """Wait for ``batch_id`` to end (polling with backoff), record and return its results.

        ``items`` are the batch's requests (as submitted; a resumed run rebuilds them), which
        say how to attribute each result. Results whose custom id is not among them are
        recorded under the agent's own run and role.
        """
        batch = await self._ended(batch_id)
        created = _unix(batch.created_at)
        latency = _unix(batch.ended_at) - created if batch.ended_at else 0.0
        asked = dict(items)
        results: list[BatchResult] = []
        decoder = await self._api(lambda: self.agent.client.messages.batches.results(batch_id))
        async for entry in decoder:
            request = asked.get(entry.custom_id) or AskRequest(prompt="?")
            results.append(self._result(entry, request, created, latency))
        await self.agent.ledger.flush()
        if batch_id in self._reserved:
            run_id, reservation = self._reserved.pop(batch_id)
            self.agent.backend.ledger.release.remote(run_id, reservation, 0)
        return results

    # -- steps ---------------------------------------------------------------------------

    async def _reserve(self, run_id: str, worst: Decimal) -> str | None:
        """Reserve the batch's worst case at the batch price if the run has a cap."""
        agent = self.agent
        if not await agent._run_is_capped(run_id):
            return None
        reservation = f"batch.{uuid.uuid4().hex[:12]}"
        await agent.ledger.reserve(run_id, reservation, 0,
                                   worst * (1 - agent.prices.batch_discount),
                                   ttl_s=_RESERVE_TTL_S)
        return reservation

    async def _ended(self, batch_id: str) -> Any:
        """Poll the batch until it has ended, waiting 1.5x longer each time."""
        wait = POLL_FIRST_S
        while True:
            batch = await self._api(
                lambda: self.agent.client.messages.batches.retrieve(batch_id))
            if batch.processing_status == "ended":
                return batch
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, POLL_MAX_S)

    def _result(self, entry: Any, request: AskRequest, created: float,
                latency: float) -> BatchResult:
        """One result line: recorded in the Ledger, and turned into a reply or an outcome."""
        agent, result = self.agent, entry.result
        ctx = agent._context(request, getattr(getattr(result, "message", None), "model", None)
                             or agent._route(request))
        if result.type == "succeeded":
            message = result.message
            attempt = Attempt(started_at=created, content=api_call.map_content(message.content),
                              stop_reason=message.stop_reason,
                              usage=Usage.from_api(message.usage), latency_s=latency)
            self._record(ctx, attempt, "ok")
            return BatchResult(custom_id=entry.custom_id, outcome="succeeded",
                               reply=self._reply(ctx, attempt))
        error = getattr(getattr(getattr(result, "error", None), "error", None), "type", None)
        if result.type == "errored":  # answered with an error: not billed, but an attempt
            self._record(ctx, Attempt(started_at=created, latency_s=latency), "error",
                         error_type=error or "api_error")
        return BatchResult(custom_id=entry.custom_id, outcome=result.type, error=error)

    def _record(self, ctx: _CallContext, attempt: Attempt, status: str,
                error_type: str | None = None) -> None:
        agent = self.agent
        agent.ledger.record(CallRecord(
            call_id=ctx.call_id, attempt=0, incarnation=agent.incarnation, run_id=ctx.run_id,
            topology=agent.spec.topology, agent=agent.spec.name, role=ctx.role,
            tier=ctx.spec.tier, model=ctx.model, status=status,  # type: ignore[arg-type]
            usage=attempt.usage, source="batch", error_type=error_type,
            started_at=attempt.started_at, latency_s=attempt.latency_s))

    def _reply(self, ctx: _CallContext, attempt: Attempt) -> Reply:
        """The reply, priced at the batch discount (as the Ledger prices the record)."""
        usage = attempt.usage
        cost = ctx.spec.cost_usd(
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cache_write_5m=usage.cache_write_5m, cache_write_1h=usage.cache_write_1h,
            cache_read=usage.cache_read, batch_discount=self.agent.prices.batch_discount)
        return Reply(text="".join(b.text for b in attempt.content if isinstance(b, TextBlock)),
                     content=attempt.content, stop_reason=attempt.stop_reason,
                     agent=self.agent.spec.name, tier=ctx.spec.tier, model=ctx.model,
                     usage=usage, cost_usd=cost, latency_s=attempt.latency_s,
                     call_ids=(ctx.call_id,))

    async def _api(self, call: Callable[[], Awaitable[T]]) -> T:
        """One batch-endpoint call, retried by the backend's policy (a 429 waits as told).

        Raises:
            CallFailed: translated from the SDK (never its exception, which holds the key).
        """
        policy = self.agent.backend.retry
        for retry in range(policy.max_retries + 1):
            attempt = Attempt()
            with api_call.translated(attempt):
                return await call()
            if not policy.should_retry(retry=retry, status=attempt.status,
                                       headers=attempt.headers, error_code=attempt.error_code):
                break
            await asyncio.sleep(policy.delay(retry=retry, status=attempt.status,
                                             headers=attempt.headers))
        assert attempt.error is not None
        raise attempt.error


def _unix(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else time.time()
