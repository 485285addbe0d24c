"""Many asks per Ray call: the caller's side of ``Agent.ask_batch`` (or of the agent's lane).

Why: a Ray actor call costs about a millisecond of CPU across the caller and the actor, about
as much as the SDK's whole HTTP call, and batching k requests per call is close to k times
cheaper (both measured: ``docs/performance.md``). So a caller that has many asks in flight to
one agent host queues them and sends them together in one ``ask_batch`` call; the host streams
back, as a Ray streaming generator, lists of the replies that finished together.

When the host is idle an ask leaves after the current turn of the event loop (with every ask
made in that turn: the one-call-at-a-time path pays no wait). While batches are in flight, asks
wait a few turns for company (a burst of replies frees its slots over 2-3 turns) and, unless
that made ``_FULL_BATCH`` of them, up to the hold of :mod:`actors.call_pace`: 20 ms while the
agent's calls are fast (CPU-bound, so batching is what pays), a small share of their latency
while they are slow (4 ms at 200 ms: a longer wait would only delay every call). A busy host
finishes its calls one by one, and sending each freed slot's ask at once would settle into one
ask per Ray call (measured: 1.3 asks per call at 50 in flight; about 10 with the hold,
``docs/performance.md``).

Cancelling an ask does not stop a reply that is already on its way; once every ask of a batch
is cancelled, the batch's generator is cancelled (``ray.cancel``), which stops the host's calls
(dropping a generator does not stop it).

An agent on the caller's node is asked over its lane instead (``actors/lane_client.py``): one
frame per ask, no Ray call, no hold (a frame costs ~0.05 ms, so waiting for company would only
add its wait: ``docs/performance.md``, "A direct lane"); what follows is the path without one.

Example::

    batcher = AskBatcher(agent)                    # one per agent handle, in the caller's loop
    reply = await batcher.ask(AskRequest(prompt="..."))
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors import agent_handle, lane_client
from actors.call_pace import CallPace
from actors.messages import AskRequest, Reply

DEFAULT_MAX_BATCH = 64
"""Most asks in one Ray call (bounds one call's payload and a lost host's re-sends)."""
_HOLD_TURNS = 3
"""Loop turns asks wait for company while batches are in flight (none when idle)."""
_FULL_BATCH = 8
"""Asks worth sending at once (a wave of freed slots, as a map phase makes them)."""


class _Batch:
    """One ``ask_batch`` call in flight: its generator and the futures of its asks."""

    __slots__ = ("futures", "gen")

    def __init__(self, futures: list[asyncio.Future[Reply]]) -> None:
        self.futures = futures
        self.gen: Any = None

    def abandoned(self, _future: asyncio.Future[Reply]) -> None:
        """A future settled: if every ask was cancelled, stop the host's calls."""
        if self.gen is not None and all(f.done() for f in self.futures) and \
                any(f.cancelled() for f in self.futures):
            ray.cancel(self.gen)


class AskBatcher:
    """Sends asks to one Agent actor in batches; each ask gets its own reply or error.

    Args:
        handle: The Agent actor handle.
        max_batch: Most asks in one Ray call.
        lane: Ask over the agent's lane when it has one (``actors/lane_client.py``); False:
            always over Ray (tests of Ray's path).
    """

    def __init__(self, handle: Any, max_batch: int = DEFAULT_MAX_BATCH, *,
                 lane: bool = True) -> None:
        self._handle, self._max_batch, self._lane = handle, max_batch, lane
        self._queue: list[tuple[AskRequest, asyncio.Future[Reply]]] = []
        self._scheduled = False
        self._streams: set[asyncio.Task[None]] = set()
        self.pace = CallPace()
        """The latency of this agent's replies: whether asks wait for company."""
        self.calls = 0
        """Ray calls made (batches sent), for tests and diagnosis."""
        self.items = 0
        """Streamed items received (each a list of replies), for diagnosis."""
        self.lane_asks = 0
        """Asks answered over the agent's lane, for tests and diagnosis."""

    def __repr__(self) -> str:
        return f"AskBatcher(queued={len(self._queue)}, streams={len(self._streams)})"

    async def ask(self, request: AskRequest) -> Reply:
        """The agent's reply to ``request``.

        Raises:
            RaytroupeError: the agent's error for this request (budget, call failed...);
                ``AgentLost`` if the host died before this ask's reply came back (asks made
                once its death is seen wait for its restart: ``actors/agent_handle.py``).
        """
        if self._lane:
            await agent_handle.ready(self._handle)
            reply = await agent_handle.lane_ask(self._handle, request)
            if reply is not None:
                self.lane_asks += 1
                return reply
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        self._queue.append((request, future))
        if not self._scheduled:
            self._scheduled = True
            if self._streams:  # batches in flight: let this ask find company first
                loop.call_soon(self._gather, _HOLD_TURNS)
            else:  # idle: after this turn (every ask made in it goes along)
                loop.call_soon(self._dispatch)
        return await future

    async def settled(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every batch sent has ended on the agent, the
        cancelled ones too: then their attempts' records exist, and a flush ships them."""
        if self._streams:
            await asyncio.wait(set(self._streams), timeout=timeout_s)
        if self._lane:
            await lane_client.settled(self._handle, timeout_s)

    def _gather(self, turns: int) -> None:
        """Hold asks while batches are in flight: a few loop turns (a burst of replies frees
        its slots over 2-3 turns), then, unless that made a batch, up to the pace's hold.
        Without that hold, a lone ask's reply comes back alone and frees one slot, whose ask
        goes alone: a steady state of one ask per Ray call."""
        loop = asyncio.get_running_loop()
        if len(self._queue) >= _FULL_BATCH:
            self._dispatch()
        elif turns:
            loop.call_soon(self._gather, turns - 1)
        elif hold_s := self.pace.hold_s:
            loop.call_later(hold_s, self._dispatch)
        else:
            self._dispatch()

    def _dispatch(self) -> None:
        self._scheduled = False
        queued = [(r, f) for r, f in self._queue if not f.done()]
        self._queue = []
        for start in range(0, len(queued), self._max_batch):
            task = asyncio.get_running_loop().create_task(
                self._stream(queued[start:start + self._max_batch]))
            self._streams.add(task)
            task.add_done_callback(self._streams.discard)

    async def _stream(self, asks: list[tuple[AskRequest, asyncio.Future[Reply]]]) -> None:
        """Send one batch and settle each ask's future as its reply (or error) arrives."""
        if len(asks) == 1:  # alone: a plain call costs less than a generator
            await self._single(*asks[0])
            return
        batch = _Batch([f for _, f in asks])
        try:
            await agent_handle.ready(self._handle)
            batch.gen = self._handle.ask_batch.remote([r for r, _ in asks])
            self.calls += 1
            for future in batch.futures:
                future.add_done_callback(batch.abandoned)
            async for ref in batch.gen:
                self.items += 1
                for index, result in await ref:
                    _settle(batch.futures[index], result, self.pace)
        except Exception as exc:  # the host died (or the call failed): fail what is left
            error = agent_handle.translated(self._handle, exc)
            for future in batch.futures:
                if not future.done():
                    future.set_exception(error)
        for future in batch.futures:
            if not future.done():  # the generator ended without this one: a bug, say so
                future.set_exception(RuntimeError("the agent's batch ended without a reply"))


    async def _single(self, request: AskRequest, future: asyncio.Future[Reply]) -> None:
        try:
            await agent_handle.ready(self._handle)
        except Exception as exc:
            _settle(future, exc)
            return
        ref = self._handle.ask.remote(request)
        self.calls += 1
        future.add_done_callback(lambda f: ray.cancel(ref) if f.cancelled() else None)
        try:
            result: Reply | BaseException = await ref
        except Exception as exc:
            result = agent_handle.translated(self._handle, exc)
        _settle(future, result, self.pace)


def _settle(future: asyncio.Future[Reply], result: Reply | BaseException,
            pace: CallPace | None = None) -> None:
    if pace is not None and isinstance(result, Reply):
        pace.saw(result.latency_s)
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
