"""The map phase of a map-reduce run: chunks to mappers, results to the store and the tree.

One loop walks the chunks in corpus order. A chunk whose result is stored (same content,
prompts, model and ``max_tokens``: :func:`~topologies.chunk_store.chunk_key`) is reused at no
cost; any other becomes one mapper call, with at most ``max_in_flight`` calls outstanding
(a semaphore, so 20,000 chunks are never 20,000 pending tasks). Each result is committed to the
store the moment it arrives, then handed to the streaming :class:`TreeReducer`, and dropped:
the driver keeps counters, never the results.

The first failure (a budget stop, a call that failed after its retries) stops new chunks; the
calls in flight finish and are stored (they may already be billed), then the failure is
raised. Everything paid for is stored, so re-running the same command pays only for the
chunks that were missing.

Example (a chunk frames its text as data for the mapper):
    >>> chunk = Chunk(index=3, source="docs/a.md", part=1, parts=5, text="The river rose.")
    >>> print(chunk.prompt())
    Source: docs/a.md part 2/5
    <BLANKLINE>
    <chunk>
    The river rose.
    </chunk>
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from actors.messages import AskRequest, Reply, Usage
from actors.tiers import Tier
from topologies.chunk_store import ChunkStore, chunk_key
from topologies.chunking import chunk_spans
from topologies.corpus import Corpus
from topologies.mapper_pool import MapperPool
from topologies.messages import AgentCompleted, Finding
from topologies.reduce_tree import Note, TreeReducer
from topologies.run_context import RunContext

__all__ = ["NOTHING_RELEVANT", "Chunk", "MapPhase", "MapPlan", "MapStats"]

NOTHING_RELEVANT = "NOTHING RELEVANT"
"""What the mapper prompt asks for when a chunk has nothing on the question: dropped, not
reduced (it would only dilute the reducer's context)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of one document: its place in the corpus and its text."""

    index: int
    """Position in the whole corpus (0-based): the order notes are combined in."""
    source: str
    part: int
    parts: int
    text: str

    @property
    def label(self) -> str:
        """``docs/a.md part 2/5``, or the source alone for a one-chunk document."""
        if self.parts == 1:
            return self.source
        return f"{self.source} part {self.part + 1}/{self.parts}"

    def prompt(self) -> str:
        """The mapper's user turn: the chunk, framed so it reads as data, not instructions."""
        return f"Source: {self.label}\n\n<chunk>\n{self.text}\n</chunk>"


@dataclass(frozen=True)
class MapPlan:
    """The checked input of a run: the question, the corpus and where its chunks are cut.

    Only character spans are kept per document; each chunk's text is sliced when it is sent.
    """

    question: str
    corpus: Corpus
    spans: tuple[tuple[tuple[int, int], ...], ...]

    @classmethod
    def build(cls, question: str, corpus: Corpus, chunk_tokens: int,
              overlap_tokens: int) -> MapPlan:
        """Cut every document of ``corpus``."""
        spans = tuple(tuple(chunk_spans(d.text, chunk_tokens, overlap_tokens))
                      for d in corpus.documents)
        return cls(question=question, corpus=corpus, spans=spans)

    @property
    def chunk_count(self) -> int:
        return sum(len(s) for s in self.spans)

    def chunks(self) -> Iterator[Chunk]:
        """Every chunk, in corpus order."""
        index = 0
        for doc, spans in zip(self.corpus.documents, self.spans, strict=True):
            for part, (start, end) in enumerate(spans):
                yield Chunk(index=index, source=doc.source, part=part, parts=len(spans),
                            text=doc.text[start:end])
                index += 1


@dataclass
class MapStats:
    """Counters of the map phase (the driver's whole memory of the mapped results)."""

    mapped: int = 0
    """Chunks answered by a mapper call in this run."""
    reused: int = 0
    """Chunks whose stored result was reused (no call, no cost)."""
    irrelevant: int = 0
    """Chunks whose mapper found nothing on the question (not reduced)."""
    batched: int = 0
    """Chunks answered through a Message Batch (at the batch price)."""
    batches: int = 0
    """Message Batches created (resumed ones not counted)."""
    batch_retries: int = 0
    """Batch requests not answered (errored, canceled, expired), sent again directly."""
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)


@dataclass
class MapPhase:
    """Maps every chunk of a plan once, streaming the results into ``tree``."""

    run: RunContext
    pool: MapperPool
    store: ChunkStore | None
    """None: do not reuse or store results (``resume=False``)."""
    tree: TreeReducer
    system: str
    """The mapper's system prompt (instructions and question), marked for prompt caching."""
    model: str
    tier: Tier
    max_tokens: int
    max_in_flight: int
    all_sent: Callable[[], None] | None = None
    """Called once every chunk's call has started (about a wave before the phase ends),
    unless a failure stopped the phase first."""
    stats: MapStats = field(default_factory=MapStats)

    async def run_all(self, plan: MapPlan) -> MapStats:
        """Map every chunk of ``plan``; after a failure, finish the calls in flight, then
        raise the first failure."""
        slots = asyncio.Semaphore(self.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        failures: list[BaseException] = []
        try:
            for chunk in plan.chunks():
                prompt = chunk.prompt()
                key = chunk_key(model=self.model, system=self.system, prompt=prompt,
                                max_tokens=self.max_tokens)
                stored = self.store.get(key) if self.store is not None else None
                if stored is not None:
                    await self._finished(chunk, stored, reply=None)
                    continue
                await slots.acquire()
                if failures:
                    break
                task = asyncio.create_task(self._map_one(chunk, prompt, key, slots))
                tasks.add(task)
                task.add_done_callback(lambda t: _collect(t, tasks, failures))
            else:
                if self.all_sent is not None:
                    self.all_sent()
            # After a failure no new chunk starts, but the calls in flight finish and are
            # stored: a budget stop's calls already hold a reservation within the cap, and a
            # call cancelled after it was sent is billed all the same (issue 12, D14b).
            while tasks:
                await asyncio.wait(set(tasks))
        finally:
            await _cancel(tasks)  # only when this task itself is cancelled (Ctrl-C)
        if failures:
            raise failures[0]
        return self.stats

    def request(self, prompt: str, key: str) -> AskRequest:
        """The mapper's request for one chunk (a direct call or a batch entry alike)."""
        return AskRequest(prompt=prompt, system=self.system, cache_system=True,
                          max_tokens=self.max_tokens, run_id=self.run.run_id, role="mapper",
                          call_id=f"map-{key[:16]}")

    async def _map_one(self, chunk: Chunk, prompt: str, key: str,
                       slots: asyncio.Semaphore) -> None:
        try:
            reply = await self.pool.ask(self.request(prompt, key))
        except Exception as exc:  # mapper calls skip run.ask: fire its hook here
            await self.run.crew.plugins.fire("on_error", exc, "mapper")
            raise
        finally:
            slots.release()
        if self.store is not None:
            self.store.put(key, reply.text)
        await self._finished(chunk, reply.text, reply)

    async def _finished(self, chunk: Chunk, text: str, reply: Reply | None) -> None:
        """Count the chunk, report it, and pass its note on toward the reducer."""
        stats = self.stats
        if reply is None:
            stats.reused += 1
        else:
            stats.mapped += 1
            stats.usage += reply.usage
            stats.cost_usd += reply.cost_usd
            self.run.usage += reply.usage
            self.run.cost_usd += reply.cost_usd
        await self.run.emit(AgentCompleted(
            agent="mapper", role="mapper", tier=self.tier,
            topic=chunk.label if reply is not None else f"{chunk.label} (stored)",
            input_tokens=reply.usage.total_input_tokens if reply else 0,
            output_tokens=reply.usage.output_tokens if reply else 0,
            cost_usd=reply.cost_usd if reply else Decimal(0),
            latency_s=reply.latency_s if reply else 0.0))
        if reply is not None:  # as run.ask does for every other agent's call
            await self.run.crew.plugins.fire("on_agent_complete", host_key(reply.agent), Finding(
                agent=host_key(reply.agent), topic=chunk.label, text=text, tier=reply.tier,
                usage=reply.usage, cost_usd=reply.cost_usd, latency_s=reply.latency_s))
        if text.strip().upper().rstrip(".") == NOTHING_RELEVANT:
            stats.irrelevant += 1
            return
        await self.tree.add(Note(label=chunk.label, text=text.strip(), order=chunk.index))


def host_key(actor: str) -> str:
    """The agent key of a mapper host from its actor name: ``r1/mapreduce/mapper-2`` ->
    ``mapper_2`` (the key its ``on_agent_spawn`` was fired with)."""
    return actor.rsplit("/", 1)[-1].replace("-", "_")


def _collect(task: asyncio.Task[None], tasks: set[asyncio.Task[None]],
             failures: list[BaseException]) -> None:
    tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        failures.append(task.exception())  # type: ignore[arg-type]


async def _cancel(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel the calls still in flight (the pool cancels their Ray calls too)."""
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
