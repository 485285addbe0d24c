"""The Agent actor: one Anthropic client, one tier, one pipeline of small steps per call.

Every model call goes through the same steps, each a small method with one job:

    estimate tokens -> check the context window -> Ledger: reserve the worst case (budget)
    -> RateLimiter: reserve through the process's lease -> one HTTP attempt (SDK, no retries)
    -> settle the limiter with the real usage and headers -> Ledger: record the attempt
    -> retry policy: done, or wait and go again

wrapped by the response cache (``_cached``: a hit answers without any of the above, a miss runs
them and stores the reply), with automatic prompt-cache breakpoints added where the request is
built (``_prompt_cached``, called by ``_params``: ``actors/prompt_breakpoints.py``), so that
later steps (routing, speculation, batches) slot in as steps of their own.
The SDK runs with ``max_retries=0``: this loop owns retries, so every attempt is limited
and recorded, and a stream that already delivered text is never replayed (unless the
caller opts in with ``restart_on_error``: it is then restarted from scratch, after a
``StreamRestarted`` item). User tools run in Ray tasks of their own (``actors/tools.py``).
A reply is returned only once its Ledger records survive a kill of this process: written to
the process's local journal (``actors/record_journal.py``), shipped to the Ledger in batches;
a run with a budget also waits for the Ledger's acknowledgement. Killing an agent therefore
loses at most the records of calls still in flight.

One model turn of ``ask`` wraps those steps (issue 10): route (``_route``: the tier per
request) -> speculate (``_first_of``: N attempts at once, the first valid reply wins, the
others are cancelled) -> judge each final reply before it is recorded (``_judged``) ->
escalate (``_model_turn``: a reply that fails its validation goes one tier up).

Example:
    >>> agent = spawn_agent(AgentSpec(name="demo/lead", tier="haiku"), backend)  # doctest: +SKIP
    >>> reply = ray.get(agent.ask.remote(AskRequest(prompt="Hello")))          # doctest: +SKIP
    >>> reply.text, reply.usage.output_tokens, reply.cost_usd                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import ray
from pydantic import SecretStr

from actors import api_call, call_gc, call_pace, prompt_breakpoints, singletons
from actors.api_call import Attempt
from actors.budget_check import BudgetCheck
from actors.errors import (
    ConfigError,
    ConnectionFailed,
    InvalidReply,
    Overloaded,
    PromptTooLongError,
    RaytroupeError,
)
from actors.lane_server import LaneServer
from actors.lane_wire import LaneAddress
from actors.ledger import LEDGER_NAME
from actors.ledger_client import LedgerClient
from actors.limiter_lease import LimiterLease
from actors.limits import BucketKey
from actors.memory import SUMMARY_PROMPT, ConversationMemory
from actors.message_batches import BatchResult, BatchRunner
from actors.messages import (
    AgentSpec,
    AskRequest,
    CallRecord,
    Reply,
    StreamRestarted,
    TextBlock,
    TextDelta,
    ToolUseBlock,
    Usage,
)
from actors.ratelimiter import LIMITER_NAME
from actors.redaction import install_key_redaction
from actors.response_cache import CACHE_FILE, CachedReply, cache_key, parse_ttl
from actors.response_cache_stores import CacheStore, open_store
from actors.retry_policy import RetryPolicy, server_retry_after
from actors.router import reply_problem, route, tier_above
from actors.tiers import TIERS, ModelSpec, Tier, load_price_table
from actors.token_estimate import estimate_input_tokens
from actors.tools import Toolbox

_log = logging.getLogger(__name__)

OnText = Callable[[TextDelta | StreamRestarted], None]
"""Where a streamed call's text (and the news of a restart) goes."""

# The window check uses a closer estimate than the reservation: the reservation may be
# generous (it is refunded), but refusing a prompt that fits would be a wrong answer.
_WINDOW_ESTIMATE_FACTOR = 0.75
_RETIRE_TIMEOUT_S = 3.0
"""Longest ``Agent.retire`` waits for its lease to give its stock back."""
_WARM_TIMEOUT_S = 3.0
"""Longest ``Agent.warm`` waits: warming is best effort, the first call does what is left."""
_DRAIN_TURNS = 4
"""Loop turns a speculative call gives its losers to read what already arrived (~10 us)."""


@dataclass(frozen=True)
class Backend:
    """What every agent needs from the runtime, built once by ``cluster.init``.

    The key travels as a constructor argument (never through ``runtime_env``, which the
    dashboard shows) and is a ``SecretStr``, so reprs and logs stay masked. The singletons
    travel as names, not handles: each process looks them up once (``actors.singletons``) and
    again if one dies for good, so an agent outlives a Ledger or limiter that was replaced, and
    no actor handle rides in every Agent's constructor arguments.
    """

    api_key: SecretStr
    base_url: str | None
    price_table: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 600.0
    namespace: str = "raytroupe"
    limiter_name: str = LIMITER_NAME
    ledger_name: str = LEDGER_NAME
    cache_url: str | None = None
    """The response cache's store (``sqlite:///...`` or ``redis://...``); None: the SQLite
    file in ``.raytroupe``. Set by ``cluster.init`` from ``RAYTROUPE_CACHE_URL``."""
    cache_shared: bool = False
    """Share response-cache entries across API keys (default: each key sees only its own)."""
    cache: bool = False
    """The response cache for agents and requests that do not say (``RAYTROUPE_CACHE``)."""
    cache_ttl: str = "1d"
    """Their entries' lifetime (``RAYTROUPE_CACHE_TTL``)."""
    job: str | None = None
    """The Ray job the calls are made for (the driver's, set by ``cluster.init``): the unit of
    the RateLimiter's fair share. A warm host serving many runs draws each run's calls from its
    job's share; None: the job of the process the agent lives in."""

    @property
    def limiter(self) -> Any:
        """The RateLimiter's handle, looked up by name once per process."""
        return singletons.lookup(self.limiter_name, self.namespace)

    @property
    def ledger(self) -> Any:
        """The Ledger's handle, looked up by name once per process."""
        return singletons.lookup(self.ledger_name, self.namespace)

    def singleton(self, name: str) -> singletons.Singleton:
        """A singleton of this backend's namespace, found again by name if it dies."""
        return singletons.Singleton(name, self.namespace)

    def account(self) -> str:
        """A fingerprint of the key: the rate-limit account, safe to show and store."""
        return hashlib.sha256(self.api_key.get_secret_value().encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"Backend(base_url={self.base_url!r}, account={self.account()})"


@dataclass
class _CallContext:
    """One logical call: its id, the model it targets and how to attribute it."""

    call_id: str
    model: str
    spec: ModelSpec
    run_id: str
    role: str
    max_tokens: int
    attempts: list[Attempt] = field(default_factory=list)
    capped: bool = False
    """The run has a budget: its records must reach the Ledger before the reply."""
    saved_usd: Decimal | None = None
    """Set when the response cache answered: what the original call cost."""
    speculative: bool = False
    """One of N concurrent attempts of a speculative call (recorded as such)."""
    judge: Callable[[str], str | None] | None = None
    """Why a final reply fails its validation (None: it passes), when the request has one."""
    problem: str | None = None
    """The judge's verdict on the last reply: set means the call must go one tier up."""
    lost: bool = False
    """A speculative attempt another one beat (cancelled, failed or invalid)."""
    escalated: bool = False
    """Its reply failed validation and the call went one tier up."""
    restart_on_error: bool = False
    """A stream that failed after showing text is restarted from scratch (opt-in)."""


class Agent:
    """An async Ray actor owning one pooled ``AsyncAnthropic`` client and one tier.

    Create it with :func:`spawn_agent`; call ``ask`` for a whole reply and ``stream`` for text
    deltas followed by the reply.
    """

    def __init__(self, spec: AgentSpec, backend: Backend,
                 tools: Sequence[Callable[..., Any]] = (), *,
                 clients: tuple[LimiterLease, LedgerClient] | None = None) -> None:
        install_key_redaction()
        self.spec = spec
        self.backend = backend
        self.prices = load_price_table(backend.price_table)
        self.model = spec.model or self.prices.model_for(spec.tier)
        # here: the driver imports this module, never the SDK (~1.5 s)
        from actors.messages_post import MessagesPost, pooled_client

        self.client = pooled_client(backend.api_key.get_secret_value(), backend.base_url,
                                    backend.timeout_s)
        self._post = MessagesPost(self.client)
        """Non-streaming calls: the client's request, built once (actors/messages_post.py)."""
        # A warm host (actors/agent_host.py) passes its process's one lease and Ledger client.
        self._owns_lease = clients is None
        self.lease, self.ledger = clients or (
            LimiterLease(backend.singleton(backend.limiter_name)),
            LedgerClient(backend.singleton(backend.ledger_name)))
        backend.ledger  # noqa: B018 - looked up here, not on the loop by the first call's budget check
        self.account = backend.account()
        self._bucket_keys: dict[Tier, BucketKey] = {}
        self.incarnation = uuid.uuid4().hex[:12]
        self._calls = itertools.count(1)
        self.toolbox = Toolbox(tools, isolated=True)  # a crashing tool must not kill us
        self.memory = ConversationMemory(spec.memory_budget_tokens)
        self._budgets = BudgetCheck(self._ledger_capped)
        self._compacting = asyncio.Lock()
        call_gc.tune_for_calls()  # last: what the agent holds for life is frozen with the rest

    def __repr__(self) -> str:
        return f"Agent({self.spec.name!r}, {self.spec.tier}/{self.model})"

    async def ask(self, request: AskRequest) -> Reply:
        """Answer ``request``, running tool calls until the model stops asking for them.

        Example:
            >>> reply = await agent.ask.remote(AskRequest(prompt="2+2?"))  # doctest: +SKIP

        Raises:
            PromptTooLongError, BudgetExceeded: before any HTTP call.
            CallFailed: the API failed the call after the retry policy gave up.
        """
        messages = self._messages(request)
        started, calls = time.monotonic(), []
        model = self._route(request)
        for _turn in range(self.spec.max_turns):
            contexts = await self._model_turn(request, messages, model)
            calls += contexts
            model = contexts[-1].model  # an escalated tier serves the rest of the tool loop
            final = contexts[-1].attempts[-1]
            tool_calls = [b for b in final.content if isinstance(b, ToolUseBlock)]
            if final.stop_reason != "tool_use" or not self.toolbox or not tool_calls:
                break
            messages += [{"role": "assistant", "content": _api_blocks(final.content)},
                         {"role": "user", "content": await self.toolbox.run_all(tool_calls)}]
        reply = self._reply(calls, time.monotonic() - started)
        await self._remember(request, reply.text)
        await self._persisted(calls)
        return reply

    async def stream(self, request: AskRequest
                     ) -> AsyncIterator[TextDelta | StreamRestarted | Reply]:
        """Stream the reply's text as it arrives, then yield the ``Reply``.

        Text already shown is never replayed: a stream that fails after showing text fails,
        unless the request or agent sets ``restart_on_error``, in which case it is retried
        from scratch after a ``StreamRestarted`` item (discard the text shown so far).

        A Ray streaming generator: cancel it with ``ray.cancel(gen)`` to stop the model (and
        its bill); dropping the generator does not stop it. Tools are not run on this path.

        Example:
            >>> async for ref in agent.stream.remote(AskRequest(prompt="Hi")):  # doctest: +SKIP
            ...     item = await ref
        """
        if (request.speculative or 1) > 1 or request.output_schema or request.check:
            raise ConfigError("stream cannot speculate or validate: a stream shows one "
                              "attempt's text as it arrives; use ask for speculative, "
                              "output_schema or check")
        started = time.monotonic()
        ctx = self._context(request, self._route(request))
        queue: asyncio.Queue[TextDelta | StreamRestarted | None] = asyncio.Queue()
        params = self._params(request, self._messages(request), model=ctx.model)
        params.pop("tools", None)  # this path runs no tool loop, so it offers no tools
        task = asyncio.create_task(self._cached(ctx, request, params,
                                                on_text=queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield item
            await task
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        reply = self._reply([ctx], time.monotonic() - started)
        await self._remember(request, reply.text)
        await self._persisted([ctx])
        yield reply

    async def ask_batch(self, requests: Sequence[AskRequest]
                        ) -> AsyncIterator[list[tuple[int, Reply | RaytroupeError]]]:
        """Answer many requests at once, streaming back each reply (or error) as it finishes.

        One Ray call for many asks, because Ray's per-call cost is of the order of the HTTP
        call itself (``docs/performance.md``). Each item is a list of ``(index, reply or
        error)`` for every request finished since the previous item. Use it through
        :class:`actors.agent_batch.AskBatcher`; cancel the generator to stop every call.
        """
        finished: list[tuple[int, Reply | RaytroupeError]] = []
        ready, whole = asyncio.Event(), asyncio.Event()
        left = len(requests)

        async def one(index: int, request: AskRequest) -> None:
            result = await self._ask_or_error(request)
            if isinstance(result, Reply):
                call_pace.HOSTED.saw(result.latency_s)
            finished.append((index, result))
            ready.set()
            if len(finished) >= left:
                whole.set()

        tasks: list[asyncio.Task[None]] = []
        try:
            for index, request in enumerate(requests):
                tasks.append(asyncio.create_task(one(index, request)))
                # One turn of the loop per ask: its HTTP request leaves before the next ask's
                # pipeline runs (aiohttp writes a body in a task of its own, which would queue
                # behind every other ask of the batch: the first request would leave only
                # after the last one's ~0.6 ms pipeline; docs/performance.md).
                await asyncio.sleep(0)
            while left:
                await ready.wait()
                # Replies finishing close together go back together: one streamed item for ten
                # costs a tenth, and the caller then sends their successors together too. Held
                # 20 ms while calls are fast, a small share of slow ones' latency (call_pace).
                hold_s = call_pace.HOSTED.hold_s
                if hold_s and len(finished) < left:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(hold_s):
                            await whole.wait()
                ready.clear()
                whole.clear()
                items = finished[:]
                finished.clear()
                left -= len(items)
                yield items
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def open_lane(self, caller_node: str) -> LaneAddress | None:
        """A direct lane for one caller on this node: its asks then skip Ray's per-call cost
        (``actors/lane_server.py``); None for a caller on another node (Ray's path)."""
        return await self._lanes.open(caller_node)

    @functools.cached_property
    def _lanes(self) -> LaneServer:
        return LaneServer(self._ask_or_error, self.spec.name)

    async def _ask_or_error(self, request: AskRequest) -> Reply | RaytroupeError:
        """``ask``, with its error as a value: one failed request must not fail the batch."""
        try:
            return await self.ask(request)
        except RaytroupeError as exc:
            return exc
        except Exception as exc:  # a bug of ours: logged here (redacted), named to the caller
            _log.exception("agent %s: a batched ask failed", self.spec.name)
            return RaytroupeError(f"agent {self.spec.name} failed on this request "
                                  f"({type(exc).__name__}); see the agent's log")

    async def warm(self) -> None:
        """Before the first call: pay the one-time costs of a first call now, off its path.

        The client's request built (``MessagesPost.warm``: the first call skips the SDK's
        request building), the limiter lease registered (its first grant: one round trip, not
        two) and the run's budget asked once. A map phase's first wave starts ~25 calls per
        host at once, each paying these (``docs/performance.md``, "The map phase's wall
        time"); a topology calls this while its agents start. Best effort and bounded: what
        fails or is slow here is done by the first call, as without it.
        """
        steps = [self._post.warm(), self.lease.open()]
        if self.spec.run_id:
            steps.append(self._budgets.capped(self.spec.run_id))
        try:
            async with asyncio.timeout(_WARM_TIMEOUT_S):
                failed = [r for r in await asyncio.gather(*steps, return_exceptions=True)
                          if isinstance(r, Exception)]
        except TimeoutError as exc:
            failed = [exc]
        for exc in failed:
            _log.debug("agent %s: a warming step failed (%s); the first call does it",
                       self.spec.name, type(exc).__name__)

    async def flush(self) -> None:
        """Wait until every Ledger record of this agent is acknowledged."""
        await self.ledger.flush()

    async def retire(self) -> None:
        """Before this actor is killed: flush the Ledger records, then give the lease's stock
        back (tokens and slots already taken from the cluster's buckets).

        Killed with its stock, the limiter would write it off only at the lease's TTL (~6 s),
        and a job starting meanwhile under a binding limit would start that much short. A warm
        host's agent shares the host's lease, which the host keeps for the next run.
        """
        if "_lanes" in self.__dict__:  # no listener (nor its socket file) outlives the actor
            self._lanes.close()
        await self.flush()
        if not self._owns_lease:
            return
        try:  # bounded: a run's end must not wait on a limiter that cannot be reached
            await asyncio.wait_for(self.lease.close(), _RETIRE_TIMEOUT_S)
        except Exception as exc:  # best effort: the limiter writes the stock off at the TTL anyway
            _log.warning("agent %s: its limiter lease did not close (%s); the limiter writes "
                         "its stock off at the lease's TTL", self.spec.name, type(exc).__name__)

    async def submit_batch(self, items: Sequence[tuple[str, AskRequest]]) -> str:
        """Send ``(custom_id, request)`` items as one Message Batch; return its id.

        See :mod:`actors.message_batches` (half price, answered later, resumable by id).
        """
        return await self._batches.submit(items)

    async def collect_batch(self, batch_id: str, items: Sequence[tuple[str, AskRequest]]
                            ) -> list[BatchResult]:
        """Wait for a batch to end; record its results (``source="batch"``) and return them."""
        return await self._batches.collect(batch_id, items)

    @functools.cached_property
    def _batches(self) -> BatchRunner:
        return BatchRunner(self)

    # -- routing, escalation and speculation (issue 10) ---------------------------------

    def _route(self, request: AskRequest) -> str:
        """The model for ``request``: the agent's own, or the tier its router picks."""
        router = self.spec.router
        if router is None:
            return self.model
        tier = route(request) if router == "auto" else router(request)
        if tier not in TIERS:
            raise ConfigError(f"agent {self.spec.name}'s router returned {tier!r}; a router "
                              f"returns one of {', '.join(TIERS)}")
        return self.model if tier == self.spec.tier else self.prices.model_for(tier)

    async def _model_turn(self, request: AskRequest, messages: list[dict[str, Any]],
                          model: str) -> list[_CallContext]:
        """One model turn, escalated one tier up while its reply fails validation.

        Returns every context it paid for (escalated replies and speculative losers first,
        the accepted one last).

        Raises:
            InvalidReply: the top tier's reply failed its validation too.
        """
        paid: list[_CallContext] = []
        tiers = request.speculative_tiers
        while True:
            paid += await self._first_of(request, messages, model, tiers)
            tiers = ()  # an escalated turn speculates on the tier above only
            final = paid[-1]
            if final.problem is None:
                return paid
            above = tier_above(final.spec.tier)
            final.escalated = True
            if above is None:
                raise InvalidReply(f"agent {self.spec.name}: {final.problem}, up to the top "
                                   f"tier ({final.model}); {len(paid)} call(s) were billed")
            _log.info("agent %s: %s on %s; escalating to %s", self.spec.name, final.problem,
                      final.model, above)
            model = self.prices.model_for(above)

    async def _first_of(self, request: AskRequest, messages: list[dict[str, Any]],
                        model: str, tiers: Sequence[Tier] = ()) -> list[_CallContext]:
        """N attempts at once; the first valid reply wins and the others are cancelled.

        One attempt is the plain call. With N > 1 every attempt streams, so a loser cancelled
        mid-reply is recorded with exactly what it used (its input, and the output tokens
        that reached us), and its HTTP stream is closed at once by cancelling its task.
        Returns the losers' contexts first and the winner's last; if none is valid, the
        contexts in finishing order (the caller escalates the last).

        Raises:
            CallFailed and friends: every attempt failed (the last error).
        """
        n = request.speculative or self.spec.speculative
        models = [self.prices.model_for(t) if t != self.spec.tier else self.model
                  for t in tiers] or [model]
        contexts = [self._context(request, models[i % len(models)], speculative=n > 1)
                    for i in range(n)]
        if n == 1:
            # The response cache answers a single attempt (after routing: the model is in
            # its key); speculation exists to race the API, so it always calls it.
            await self._cached(contexts[0], request,
                               self._params(request, messages, model=model), None)
            return contexts
        tasks = {asyncio.create_task(self._call(ctx, self._params(request, messages, ctx.model),
                                                on_text=_discard)): ctx for ctx in contexts}
        finished: list[_CallContext] = []
        error: BaseException | None = None
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        error = task.exception()
                        continue
                    finished.append(tasks[task])
                if any(ctx.problem is None for ctx in finished):
                    break
        finally:
            await _read_what_arrived()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if not finished:
            assert error is not None
            raise error
        winners = [ctx for ctx in finished if ctx.problem is None]
        last = winners[0] if winners else finished[-1]
        losers = [ctx for ctx in contexts if ctx is not last and ctx.attempts]
        for ctx in losers:
            ctx.lost = True
        return [*losers, last]

    # -- the call pipeline ---------------------------------------------------------------

    async def _cached(self, ctx: _CallContext, request: AskRequest, params: dict[str, Any],
                      on_text: OnText | None) -> None:
        """The response cache around one logical call: a hit answers it, a miss stores it.

        A store that fails (Redis down, a locked file) costs the cache, never the call: it is
        logged and the call goes to the API.
        """
        ttl_s = self._cache_ttl(request)
        if ttl_s is None:
            await self._call(ctx, params, on_text)
            return
        key = cache_key(params, None if self.backend.cache_shared else self.account)
        attempt = Attempt()
        entry = await self._cache_io(self._cache_store.get(key))
        if entry is not None and entry.model == ctx.model and _passes(ctx, entry.content):
            attempt.content, attempt.stop_reason = entry.content, entry.stop_reason
            attempt.usage = entry.usage
            for piece in _replayed(attempt.content) if on_text else ():
                on_text(piece)  # type: ignore[misc]
            ctx.attempts.append(attempt.finish())
            ctx.saved_usd = entry.cost_usd
            self._record(ctx, attempt, 0, status="cache_hit", source="cache")
            return
        await self._call(ctx, params, on_text)
        final = ctx.attempts[-1]
        if ctx.problem is not None:  # a reply that failed validation is not kept
            return
        await self._cache_io(self._cache_store.put(key, CachedReply(
            model=ctx.model, content=final.content, stop_reason=final.stop_reason,
            usage=final.usage, cost_usd=_cost(ctx.spec, final.usage)), ttl_s))

    def _cache_ttl(self, request: AskRequest) -> float | None:
        """The lifetime of this call's cache entry, or None when it is not to be cached.

        Off unless asked: every reply is a sample (API version 2026-10-21 takes no
        temperature, ``docs/messages-api.md`` §1), and a hit repeats the first sample.
        """
        on = request.cache
        if on is None:
            on = self.spec.cache if self.spec.cache is not None else self.backend.cache
        if not on:
            return None
        return parse_ttl(request.cache_ttl or self.spec.cache_ttl or self.backend.cache_ttl)

    @functools.cached_property
    def _cache_store(self) -> CacheStore:
        """The response cache's store, opened on the first cached call."""
        return open_store(self.backend.cache_url or f"sqlite:///.raytroupe/{CACHE_FILE}")

    async def _cache_io(self, step: Any) -> Any:
        """Await a store call; a failure is logged and read as a miss."""
        try:
            return await step
        except Exception as exc:
            _log.warning("agent %s: response cache unavailable (%s): calling the API",
                         self.spec.name, type(exc).__name__)
            return None

    async def _call(self, ctx: _CallContext, params: dict[str, Any],
                    on_text: OnText | None) -> None:
        """Run one logical call to success, or raise the final ``CallFailed``."""
        estimate = estimate_input_tokens(params)
        self._check_request(ctx, estimate)
        policy = self.backend.retry
        overloaded_since: float | None = None  # the time budget runs from the first 529/5xx
        for retry in range(policy.max_retries + 1):
            reserved = await self._reserve(ctx, retry, estimate)
            left = policy.time_left(overloaded_since, time.monotonic())
            try:
                attempt = await self._attempt(ctx, params, estimate, retry, on_text, reserved,
                                              left)
            except TimeoutError:
                break  # the limiter's circuit breaker stayed open past the time budget
            if attempt.error is None:
                return
            if (attempt.status or 0) >= 500 and overloaded_since is None:
                overloaded_since = time.monotonic()
            left = policy.time_left(overloaded_since, time.monotonic())
            if (left is not None and left <= 0) or not policy.should_retry(
                    retry=retry, status=attempt.status, headers=attempt.headers,
                    error_code=attempt.error_code,
                    delivered=attempt.delivered and not ctx.restart_on_error):
                break
            delay = policy.delay(retry=retry, status=attempt.status, headers=attempt.headers)
            await asyncio.sleep(delay if left is None else min(delay, left))
            if attempt.delivered and on_text is not None:  # the caller discards what it showed
                on_text(StreamRestarted(attempt=retry + 1, reason=str(attempt.error)))
        error = ctx.attempts[-1].error
        if isinstance(error, ConnectionFailed):  # say where it went (the URL, never the key)
            error.message += f" at ANTHROPIC_BASE_URL {self.client.base_url}"
        assert error is not None
        error.attempts = len(ctx.attempts)
        if isinstance(error, Overloaded) and overloaded_since is not None \
                and not ctx.attempts[-1].delivered:  # a cut stream says so instead
            error.message = policy.gave_up(time.monotonic() - overloaded_since, error.attempts)
        error.possibly_billed = sum(a.possibly_billed for a in ctx.attempts)
        error.message += self._stream_policy(ctx, policy)
        raise error

    @staticmethod
    def _stream_policy(ctx: _CallContext, policy: RetryPolicy) -> str:
        """What the final error says of a stream that failed after showing text."""
        last = ctx.attempts[-1]
        restarts = sum(a.delivered for a in ctx.attempts[:-1])
        if ctx.restart_on_error and restarts:
            return (f"; the stream was restarted {restarts} time(s) (restart_on_error=True) "
                    "and failed each time")
        transient = policy.model_copy(update={"max_retries": 1}).should_retry(
            retry=0, status=last.status, headers=last.headers, error_code=last.error_code)
        if not (last.delivered and transient):
            return ""  # the error says it all: no retry could have helped
        if ctx.restart_on_error or policy.max_retries == 0:
            return f"; not restarted: the retry policy's {policy.max_retries} retries are used up"
        return "; not retried: text already delivered; set restart_on_error=True to restart"

    async def _persisted(self, calls: list[_CallContext]) -> None:
        """Return once the calls' records survive a kill of this process.

        The local journal makes that immediate. A run with a budget still waits for the
        Ledger's acknowledgement: until its records land, the Ledger holds each attempt at its
        worst case, and the run's next reservation would be refused early.
        """
        if any(ctx.capped for ctx in calls):
            await self.ledger.flush()
        else:
            await self.ledger.persisted()

    async def _reserve(self, ctx: _CallContext, retry: int, estimate: int) -> bool:
        """Reserve the attempt's worst case if the run has a cap; return whether one is held.

        The reservation outlives the HTTP timeout by ten minutes of queueing at the limiter,
        so that a long stream cannot outlast it and let the run pass its cap.
        """
        if not await self._run_is_capped(ctx.run_id):
            return False
        ctx.capped = True
        try:
            await self.ledger.reserve(ctx.run_id, ctx.call_id, retry,
                                      self._worst_case_usd(ctx, estimate),
                                      ttl_s=self.backend.timeout_s + 600)
        except asyncio.CancelledError:
            self._release(ctx, retry)  # it may have landed; releasing nothing is a no-op
            raise
        return True

    def _release(self, ctx: _CallContext, retry: int) -> None:
        """Drop an attempt's reservation without a record: it was never sent."""
        self.backend.ledger.release.remote(ctx.run_id, ctx.call_id, retry)

    async def _run_is_capped(self, run_id: str) -> bool:
        """Whether the run has a budget, asked of the Ledger every few seconds, off the path
        of the calls (``actors/budget_check.py``).

        Runs without a cap need no reservation, which saves a Ledger round trip (~2 ms) per
        call. A cap set on a run already in progress binds this agent within
        ``budget_check.RECHECK_S``; set budgets before the run starts (sessions and the CLI do).
        """
        return await self._budgets.capped(run_id)

    async def _ledger_capped(self, run_id: str) -> bool:
        status = await self.backend.ledger.budget.remote(run_id)
        return status.cap_usd is not None

    async def _attempt(self, ctx: _CallContext, params: dict[str, Any], estimate: int,
                       retry: int, on_text: OnText | None,
                       reserved: bool, wait_s: float | None = None) -> Attempt:
        """One HTTP attempt inside a limiter permit, recorded in the Ledger if it was sent.

        Nothing sent (the limiter refused, or the caller cancelled while queued): the budget
        reservation is released and nothing is recorded, so attempts equal HTTP requests.
        Cancelled after sending: a stream is recorded with what it used so far; a whole call
        at its worst case, because the server finishes and bills it whatever we do.
        """
        key = self._bucket_key(ctx.spec.tier)
        attempt = Attempt()
        try:
            async with self.lease.reserve(key, input_tokens=estimate,
                                          output_tokens=ctx.max_tokens, timeout_s=wait_s,
                                          after_overloaded=bool(ctx.attempts) and
                                          (ctx.attempts[-1].status or 0) >= 500) as permit:
                await self._send(params, on_text, attempt)
                attempt.unanswered(estimate, ctx.max_tokens)
                self._settle(permit, attempt)
        except asyncio.CancelledError:
            if attempt.sent:
                attempt.usage = (attempt.partial_usage() or Usage()) if on_text else \
                    Usage(input_tokens=estimate, output_tokens=ctx.max_tokens)
                ctx.attempts.append(attempt)  # a speculative loser is part of the cost
                self._record(ctx, attempt.finish(), retry, status="cancelled")
            elif reserved:
                self._release(ctx, retry)
            raise
        except Exception:
            if not attempt.sent:
                if reserved:
                    self._release(ctx, retry)
                raise
            # A failure of ours after sending (api_call translates the SDK's own): the
            # request may have been billed, so it is recorded and retried like a lost
            # connection, and nothing of the raw exception leaves the actor.
            attempt.error = ConnectionFailed("the attempt failed in the client",
                                             error_type="client_error")
            attempt.unanswered(estimate, ctx.max_tokens)  # its permit stayed spent: the same
        ctx.attempts.append(attempt)
        status = "possibly_billed" if attempt.possibly_billed else self._judged(ctx, attempt)
        self._record(ctx, attempt, retry, status=status)
        return attempt

    def _bucket_key(self, tier: Tier) -> BucketKey:
        """The limiter's bucket of a tier for this agent's key, built once per tier (a
        validated model: ~5 us per call otherwise)."""
        key = self._bucket_keys.get(tier)
        if key is None:
            key = self._bucket_keys[tier] = BucketKey(account=self.account, tier=tier)
        return key

    @staticmethod
    def _judged(ctx: _CallContext, attempt: Attempt) -> str:
        """The attempt's status: ``ok``, ``error``, or ``escalated`` for a final reply that
        fails the request's validation (billed like any reply; the call goes one tier up)."""
        if attempt.error is not None:
            return "error"
        ctx.problem = None
        if ctx.judge is not None and attempt.stop_reason != "tool_use":
            text = "".join(b.text for b in attempt.content if isinstance(b, TextBlock))
            ctx.problem = ctx.judge(text)
        return "ok" if ctx.problem is None else "escalated"

    async def _send(self, params: dict[str, Any], on_text: OnText | None,
                    attempt: Attempt) -> None:
        if on_text is None:
            await api_call.send(self._post, params, attempt)
            return
        async for delta in api_call.stream(self.client, params, attempt):
            on_text(delta)

    @staticmethod
    def _settle(permit: Any, attempt: Attempt) -> None:
        """Tell the limiter what the attempt really used.

        A 429 pauses the bucket cluster-wide. An error with a status means the API answered
        without running the model, so nothing is charged but the request. A sent attempt with
        no answer is settled at what it is recorded with (its reservation when it may have
        been billed, what a cut stream received): the limiter and the Ledger agree.
        """
        if attempt.status == 429:
            permit.rate_limited(retry_after_s=getattr(attempt.error, "retry_after", None),
                                headers=attempt.headers)
        elif (attempt.status or 0) >= 500:
            # Counted toward the limiter's circuit breaker (actors/limiter_breaker.py).
            permit.overloaded(retry_after_s=server_retry_after(attempt.headers),
                              headers=attempt.headers)
        elif attempt.status is not None or attempt.sent:
            permit.settle(input_tokens=attempt.usage.limited_input_tokens,
                          output_tokens=attempt.usage.output_tokens, headers=attempt.headers)

    def _record(self, ctx: _CallContext, attempt: Attempt, retry: int, status: str,
                source: str = "api") -> None:
        error = attempt.error
        self.ledger.record(CallRecord(
            call_id=ctx.call_id, attempt=retry, incarnation=self.incarnation,
            run_id=ctx.run_id, topology=self.spec.topology, agent=self.spec.name,
            role=ctx.role, tier=ctx.spec.tier, model=ctx.model, status=status,  # type: ignore[arg-type]
            usage=attempt.usage, speculative=ctx.speculative, streamed=attempt.ttft_s is not None,
            source=source,  # type: ignore[arg-type]
            http_status=attempt.status if status in ("ok", "error", "escalated") else None,
            error_type=error.error_type if error else None, request_id=attempt.request_id,
            started_at=attempt.started_at, latency_s=attempt.latency_s, ttft_s=attempt.ttft_s))

    # -- small pure steps ----------------------------------------------------------------

    def _context(self, request: AskRequest, model: str, *,
                 speculative: bool = False) -> _CallContext:
        judged = request.output_schema is not None or request.check is not None
        return _CallContext(
            # A request's call_id tags the logical call; the suffix makes each execution of it
            # unique, because a restarted agent re-running it is billed again and the Ledger
            # must count both (it deduplicates only true replays of one record).
            # A counter, not a uuid4: os.urandom cost ~50 us per call on a busy box (cProfile
            # of a host), and the incarnation already makes the id unique across processes.
            call_id=f"{request.call_id or 'call'}.{self.incarnation}.{next(self._calls):x}",
            model=model,
            spec=self.prices.spec(model), run_id=request.run_id or self.spec.run_id,
            role=request.role or self.spec.role, max_tokens=request.max_tokens,
            speculative=speculative,
            judge=functools.partial(reply_problem, request=request) if judged else None,
            restart_on_error=self.spec.restart_on_error if request.restart_on_error is None
            else request.restart_on_error)

    @staticmethod
    def _check_request(ctx: _CallContext, estimate: int) -> None:
        """Refuse, before any HTTP call, what the model can never accept."""
        if ctx.max_tokens > ctx.spec.max_output_tokens:
            raise ConfigError(f"max_tokens {ctx.max_tokens:,} is over {ctx.model}'s maximum of "
                              f"{ctx.spec.max_output_tokens:,} output tokens")
        likely = int(estimate * _WINDOW_ESTIMATE_FACTOR)
        if likely > ctx.spec.context_window:
            raise PromptTooLongError(ctx.model, likely, ctx.spec.context_window)

    @staticmethod
    def _worst_case_usd(ctx: _CallContext, estimate: int) -> Decimal:
        """Input at its dearest possible price (a 1-hour cache write) plus all of max_tokens."""
        spec = ctx.spec
        dearest = max(spec.input, spec.cache_write_1h or spec.input)
        return (dearest * estimate + spec.output * ctx.max_tokens) / Decimal(1_000_000)

    def _messages(self, request: AskRequest) -> list[dict[str, Any]]:
        turns = [*self.memory.turns, *request.history]
        return [{"role": t.role, "content": t.content} for t in turns] + \
            [{"role": "user", "content": request.prompt}]

    def _params(self, request: AskRequest, messages: list[dict[str, Any]],
                model: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"model": model or self.model,
                                  "max_tokens": request.max_tokens, "messages": messages}
        system = request.system if request.system is not None else self.spec.system
        if system:
            params["system"] = [{"type": "text", "text": system,
                                 **({"cache_control": {"type": "ephemeral"}}
                                    if request.cache_system else {})}]
        if self.toolbox:
            params["tools"] = self.toolbox.schemas()
        if request.stop_sequences:
            params["stop_sequences"] = list(request.stop_sequences)
        return self._prompt_cached(request, params)

    def _prompt_cached(self, request: AskRequest, params: dict[str, Any]) -> dict[str, Any]:
        """Automatic prompt caching: breakpoints on the shared prefixes, unless turned off."""
        on = request.prompt_cache if request.prompt_cache is not None else self.spec.prompt_cache
        if not on:
            return params
        spec = self.prices.spec(params["model"])
        return prompt_breakpoints.with_breakpoints(params, spec.min_cacheable_tokens)

    def _reply(self, calls: list[_CallContext], latency_s: float) -> Reply:
        usage: Usage | None = None  # the one attempt's own, without a sum, in the usual case
        cost, saved, unsure = Decimal(0), Decimal(0), Decimal(0)
        for ctx in calls:
            if ctx.saved_usd is not None:  # a response-cache hit: nothing billed
                saved += ctx.saved_usd
                continue
            for attempt in ctx.attempts:
                if attempt.possibly_billed:  # kept apart, as the Ledger's roll-ups do
                    unsure += _cost(ctx.spec, attempt.usage)
                    continue
                usage = attempt.usage if usage is None else usage + attempt.usage
                cost += _cost(ctx.spec, attempt.usage)
        final = calls[-1].attempts[-1]
        return Reply(
            text="".join(b.text for b in final.content if isinstance(b, TextBlock)),
            content=final.content, stop_reason=final.stop_reason, agent=self.spec.name,
            tier=calls[-1].spec.tier, model=calls[-1].model, usage=usage or Usage(),
            cost_usd=cost,
            calls=len(calls), attempts=sum(len(c.attempts) for c in calls),
            latency_s=latency_s, ttft_s=final.ttft_s,
            call_ids=tuple(c.call_id for c in calls),
            cache_hits=sum(c.saved_usd is not None for c in calls), saved_usd=saved,
            speculative_losers=sum(c.lost for c in calls),
            escalations=sum(c.escalated for c in calls),
            possibly_billed=sum(a.possibly_billed for c in calls for a in c.attempts),
            possibly_billed_usd=unsure)

    async def _remember(self, request: AskRequest, answer: str) -> None:
        """Keep the exchange if asked, compacting old turns with a haiku summary when needed.

        An empty answer (a tool loop that ran out of turns) is not kept: the API refuses empty
        turns, and one would break every later call. A failed summary leaves the memory as it
        was: the reply it follows is already paid for and must not be lost.
        """
        if not request.remember or not answer.strip():
            return
        self.memory.add("user", request.prompt)
        self.memory.add("assistant", answer)
        if not self.memory.needs_compaction() or self._compacting.locked():
            return
        async with self._compacting:
            old = len(self.memory.turns) - self.memory.keep_recent
            haiku = self.prices.model_for("haiku")
            summary_request = AskRequest(prompt=SUMMARY_PROMPT +
                                         self.memory.transcript_to_compact(), max_tokens=400,
                                         run_id=request.run_id, role=request.role)
            ctx = self._context(summary_request, haiku)
            params = self._params(summary_request, [{"role": "user",
                                                     "content": summary_request.prompt}], haiku)
            params.pop("tools", None)
            try:
                await self._call(ctx, params, on_text=None)
            except RaytroupeError as exc:
                _log.warning("agent %s: memory summary failed, memory kept whole: %s",
                             self.spec.name, exc)
                return
            self.memory.compact(self._reply([ctx], 0.0).text, upto=old)


async def _read_what_arrived() -> None:
    """Let the losers read the deltas already at our socket before they hang up.

    Each turn of the loop polls the sockets once and runs the readers woken by it; without
    these turns, deltas the server wrote (and bills) would die unread in the kernel's buffer,
    and the loser's record would fall short of the bill by them.
    """
    for _ in range(_DRAIN_TURNS):
        await asyncio.sleep(0)


def _discard(_item: TextDelta | StreamRestarted) -> None:
    """A speculative attempt streams only to be cancellable at an exact bill; no one reads it."""


def _cost(spec: ModelSpec, usage: Usage) -> Decimal:
    return spec.cost_usd(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                         cache_write_5m=usage.cache_write_5m, cache_write_1h=usage.cache_write_1h,
                         cache_read=usage.cache_read)


def _passes(ctx: _CallContext, content: Sequence[Any]) -> bool:
    """Whether a cached reply passes the request's validation (a hit must, to answer)."""
    if ctx.judge is None:
        return True
    return ctx.judge("".join(b.text for b in content if isinstance(b, TextBlock))) is None


def _replayed(content: Sequence[Any]) -> list[TextDelta]:
    """A cached reply's text as deltas, a word at a time, as ``stream`` would have sent it."""
    text = "".join(b.text for b in content if isinstance(b, TextBlock))
    return [TextDelta(text=piece) for piece in re.findall(r"\s*\S+\s*|\s+", text)]


def _api_blocks(content: Sequence[Any]) -> list[dict[str, Any]]:
    """Our content blocks back into the API's shape, for the assistant turn of a tool loop."""
    blocks: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, TextBlock) and block.text:  # the API refuses empty text blocks
            blocks.append({"type": "text", "text": block.text})
        elif isinstance(block, ToolUseBlock):
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name,
                           "input": block.input})
    return blocks


def spawn_agent(spec: AgentSpec, backend: Backend, tools: Sequence[Callable[..., Any]] = (),
                **options: Any) -> Any:
    """Create (or get, by name) the Agent actor for ``spec``.

    Agents restart after a crash (``max_restarts=3``) but Ray never replays their calls
    (``max_task_retries=0``): a call may have been billed even when Ray says it failed, so
    retries belong to the Agent's own loop, with call ids the Ledger deduplicates.

    Example:
        >>> spec = AgentSpec(name="r1/research/lead", tier="sonnet")
        >>> lead = spawn_agent(spec, backend)  # doctest: +SKIP
    """
    tier: Tier = spec.tier
    load_price_table(backend.price_table).model_for(tier)  # unknown tier: fail here, clearly
    defaults = {"name": spec.name, "namespace": backend.namespace, "get_if_exists": True,
                "max_restarts": 3, "max_task_retries": 0, "num_cpus": 0,
                "max_concurrency": 1000}
    return ray.remote(Agent).options(**{**defaults, **options}).remote(spec, backend, tools)
