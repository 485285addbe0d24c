"""The map phase through Message Batches (``MapReduceConfig(batch=True)``): half price, later.

Every chunk without a stored result becomes one request of a batch (at most ``batch_size``,
10,000, per batch; identical chunks are sent once). Each batch's id is stored with the run's
chunk store the moment it is created, then the batch is collected in a task of its own (a host
polls it with backoff: :mod:`actors.message_batches`); as each batch ends its results are
stored and fed to the reducer, while later batches still run. Requests that came back
``errored``, ``canceled`` or ``expired`` are sent again as normal calls.

A run that dies after creating batches finds their ids in the store next time and collects
them instead of paying for the chunks again (``docs/configuration.md``, "Message Batches").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from actors.errors import RequestRejected
from actors.message_batches import BatchResult
from actors.messages import AskRequest
from topologies.chunk_store import chunk_key
from topologies.mapreduce_run import Chunk, MapPhase, MapPlan, MapStats

__all__ = ["BatchedMap"]

log = logging.getLogger("raytroupe")


@dataclass
class BatchedMap:
    """Maps a plan's missing chunks through Message Batches, for one :class:`MapPhase`."""

    phase: MapPhase
    batch_size: int
    chunks: dict[str, list[Chunk]] = field(default_factory=dict)
    """Key -> the chunks it answers (identical chunks share one request)."""

    async def run_all(self, plan: MapPlan) -> MapStats:
        """Map every chunk of ``plan``; raise the first failure after cancelling the rest."""
        await self._reuse_stored(plan)
        resumed = list(self._resumed())
        covered = {key for _, pairs in resumed for _, key in pairs}
        collects = [asyncio.create_task(self._collect(batch_id, pairs))
                    for batch_id, pairs in resumed]
        try:
            unsent = [key for key in self.chunks if key not in covered]
            for group in _groups(unsent, self.batch_size):
                pairs = [(key[:48], key) for key in group]
                batch_id = await self.phase.pool.submit_batch(self._items(pairs))
                self.phase.stats.batches += 1
                if self.phase.store is not None:
                    self.phase.store.add_batch(batch_id, pairs)
                collects.append(asyncio.create_task(self._collect(batch_id, pairs)))
            await asyncio.gather(*collects)
        finally:
            for task in collects:
                task.cancel()
            await asyncio.gather(*collects, return_exceptions=True)
        return self.phase.stats

    # -- steps ---------------------------------------------------------------------------

    async def _reuse_stored(self, plan: MapPlan) -> None:
        """Finish every chunk with a stored result; index the others by key."""
        phase = self.phase
        for chunk in plan.chunks():
            key = chunk_key(model=phase.model, system=phase.system, prompt=chunk.prompt(),
                            max_tokens=phase.max_tokens)
            stored = phase.store.get(key) if phase.store is not None else None
            if stored is not None:
                await phase._finished(chunk, stored, reply=None)
            else:
                self.chunks.setdefault(key, []).append(chunk)

    def _resumed(self) -> Iterator[tuple[str, list[tuple[str, str]]]]:
        """Stored batches still owed results for chunks of this plan (a resumed run)."""
        store = self.phase.store
        if store is None:
            return
        for batch_id, pairs in store.pending_batches().items():
            mine = [(cid, key) for cid, key in pairs if key in self.chunks]
            if mine:
                yield batch_id, mine
            else:  # another question's batch: nothing of this run waits for it
                store.forget_batch(batch_id)

    def _items(self, pairs: list[tuple[str, str]]) -> list[tuple[str, AskRequest]]:
        return [(cid, self.phase.request(self.chunks[key][0].prompt(), key))
                for cid, key in pairs]

    async def _collect(self, batch_id: str, pairs: list[tuple[str, str]]) -> None:
        """Wait for one batch; store and reduce its replies; send the rest again directly."""
        phase = self.phase
        try:
            results = await phase.pool.collect_batch(batch_id, self._items(pairs))
        except RequestRejected as exc:
            if exc.status != 404:
                raise
            # A stored batch the API no longer knows (deleted, or made with another key):
            # its chunks are sent again as normal calls.
            log.warning("batch %s is gone (%s); mapping its %d chunks directly", batch_id,
                        exc, len(pairs))
            results = []
        keys = dict(pairs)
        answered: set[str] = set()
        for result in results:
            key = keys.get(result.custom_id)
            if key is None or result.reply is None:
                continue
            answered.add(key)
            await self._finished(key, result)
        again = [key for key in keys.values() if key not in answered]
        phase.stats.batch_retries += len(again)
        slots = asyncio.Semaphore(phase.max_in_flight)
        await asyncio.gather(*(self._direct(key, slots) for key in again))
        if phase.store is not None:
            phase.store.forget_batch(batch_id)

    async def _finished(self, key: str, result: BatchResult) -> None:
        reply = result.reply
        assert reply is not None
        phase = self.phase
        if phase.store is not None:
            phase.store.put(key, reply.text)
        first, *same = self.chunks[key]
        phase.stats.batched += 1
        await phase._finished(first, reply.text, reply)
        for chunk in same:  # identical text: answered once, at no further cost
            await phase._finished(chunk, reply.text, reply=None)

    async def _direct(self, key: str, slots: asyncio.Semaphore) -> None:
        """A request the batch did not answer, as a normal mapper call."""
        first, *same = self.chunks[key]
        async with slots:
            reply = await self.phase.pool.ask(self.phase.request(first.prompt(), key))
        if self.phase.store is not None:
            self.phase.store.put(key, reply.text)
        await self.phase._finished(first, reply.text, reply)
        for chunk in same:
            await self.phase._finished(chunk, reply.text, reply=None)


def _groups(keys: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(keys), size):
        yield keys[start:start + size]
