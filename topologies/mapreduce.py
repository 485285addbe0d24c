"""Map-reduce: many cheap mappers read a corpus in chunks; a stronger reducer answers.

    paths, globs, text
      └─> chunks (tokens, overlap) ─┬─> mapper host 1 ─┐  each result stored (resume)
                                    ├─> mapper host 2 ─┼─> combiners (a tree, when the notes
                                    └─> ... (spread) ──┘   overflow) ─> reducer ─> answer

The guide's ``MapReduceConfig(chunk_size, max_parallel_mappers, mapper_model, reducer_model)``,
at cluster scale: a few mapper host actors spread over the nodes serve every chunk as a logical
mapper (never an actor per chunk); the shared instructions travel as a cached system prompt;
results stream into a tree reduce and a resume store instead of piling up in the driver.
See :mod:`topologies.mapreduce_run` for the map loop, :mod:`topologies.corpus` for what inputs
are read (and skipped), :mod:`topologies.reduce_tree` for the tree.

Example:
    >>> session = create_session("mapreduce", config=MapReduceConfig(max_parallel_mappers=16),
    ...                          budget_usd="2.00")                     # doctest: +SKIP
    >>> task = MapReduceTask(question="Which rivers are named?", inputs=["examples/corpus"])
    >>> result = await session.query(task)                          # doctest: +SKIP
    >>> result.output, result.chunks, result.chunks_reused, result.skipped  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actors import agent_handle
from actors.errors import ConfigError
from actors.message_batches import BATCH_MAX_REQUESTS
from actors.messages import AgentSpec
from topologies.architecture import Architecture, ArchitectureConfig, RoleSpec
from topologies.chunk_store import ChunkStore
from topologies.corpus import CorpusLimits, SkippedFile, load_corpus
from topologies.errors import EmptyInputError
from topologies.map_batches import BatchedMap
from topologies.mapper_pool import MapperPool, default_host_count
from topologies.mapreduce_run import MapPhase, MapPlan, MapStats, host_key
from topologies.messages import ArchitectureResult
from topologies.reduce_tree import Note, TreeReducer, render_notes
from topologies.run_context import RunContext

__all__ = ["MapReduce", "MapReduceConfig", "MapReduceResult", "MapReduceTask"]

log = logging.getLogger("raytroupe")

MAX_HOSTS = 16
_PROMPT_OVERHEAD_TOKENS = 1_000
"""Reserved out of the reduce budget for the reducer's system prompt and the question."""


class MapReduceConfig(ArchitectureConfig):
    """The guide's ``MapReduceConfig``, with the knobs a cluster-sized corpus needs."""

    chunk_size: int = Field(default=1_500, ge=20, le=100_000)
    """Tokens per chunk (estimated generously: 3 bytes a token)."""
    chunk_overlap: int = Field(default=100, ge=0)
    """Tokens the next chunk repeats from the end of the previous one (at most half a chunk)."""
    max_parallel_mappers: int = Field(default=16, ge=1, le=1_000)
    """Mapper calls in flight at once, over all hosts (the RateLimiter may allow fewer)."""
    mapper_model: str | None = None
    """The mappers' tier or model id (default: haiku)."""
    reducer_model: str | None = None
    """The reducer's and combiners' tier or model id (default: sonnet)."""
    mapper_hosts: int | None = Field(default=None, ge=1, le=MAX_HOSTS)
    """Mapper host actors (default: one per alive node, at least 2, at most 16)."""
    mapper_max_tokens: int = Field(default=512, gt=0)
    """Output cap of one mapper call: a chunk's notes, not an essay."""
    reducer_max_tokens: int = Field(default=2_048, gt=0)
    """Output cap of the final answer and of each combined note."""
    reduce_budget_tokens: int = Field(default=60_000, ge=2_000)
    """Most tokens of notes one reducer call reads; more notes are combined as a tree."""
    max_parallel_combiners: int = Field(default=4, ge=1, le=64)
    """Combiner calls in flight at once while the tree grows."""
    resume: bool = True
    """Reuse stored chunk results (same text, prompts and model) and store new ones."""
    batch: bool = False
    """Send the map phase through the Message Batches API: half price, answered within hours
    (usually minutes); the batch ids are stored for resume (:mod:`topologies.map_batches`)."""
    batch_size: int = Field(default=BATCH_MAX_REQUESTS, ge=1, le=BATCH_MAX_REQUESTS)
    """Most chunks per batch (smaller batches reach the reducer sooner)."""
    store_dir: Path | None = None
    """Where chunk results are stored (default: ``<data_dir>/mapreduce`` of the runtime)."""
    inputs: list[str] = Field(default_factory=list)
    """Default files, folders or globs for a plain-question ``session.query("...")``."""
    root: Path | None = None
    """If set, every input must resolve under this folder."""
    limits: CorpusLimits = CorpusLimits()
    """Caps on the files read (count, size per file, total size)."""

    @model_validator(mode="after")
    def _sizes_fit(self) -> MapReduceConfig:
        if self.chunk_overlap * 2 > self.chunk_size:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be at most half of "
                             f"chunk_size ({self.chunk_size})")
        # A combine must always read at least two notes, or the tree could not shrink; notes
        # are capped by max_tokens, and our estimate may count up to 1.5x the API's tokens.
        largest = max(self.mapper_max_tokens, self.reducer_max_tokens)
        if self.reduce_budget_tokens - _PROMPT_OVERHEAD_TOKENS < 3 * largest:
            raise ValueError(f"reduce_budget_tokens ({self.reduce_budget_tokens}) must be at "
                             f"least 3 x the largest max_tokens ({largest}) + "
                             f"{_PROMPT_OVERHEAD_TOKENS}")
        return self


class MapReduceTask(BaseModel):
    """One map-reduce run's input: the question and what to read.

    ``inputs`` name files, folders and globs; ``text`` is text given directly. Either or both.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mapreduce_task"] = "mapreduce_task"
    question: str
    inputs: tuple[str, ...] = ()
    text: str | None = None


class MapReduceResult(ArchitectureResult):
    """The answer, what was read and skipped, and how the work was spread and reused."""

    kind: Literal["mapreduce_result"] = "mapreduce_result"  # type: ignore[assignment]
    question: str
    documents: int = 0
    chunks: int = 0
    chunks_mapped: int = 0
    """Chunks answered by a mapper call in this run."""
    chunks_reused: int = 0
    """Chunks whose stored result was reused at no cost (resume)."""
    chunks_irrelevant: int = 0
    """Chunks in which the mapper found nothing on the question."""
    skipped: tuple[SkippedFile, ...] = ()
    """Inputs not read, each with the reason."""
    combines: int = 0
    """Combiner calls of the tree reduce (0: every note fitted in one reducer call)."""
    reduce_depth: int = 0
    """Levels of the reduce tree below the final answer."""
    mapper_nodes: dict[str, str] = Field(default_factory=dict)
    """The node id each mapper host started on, by actor name."""
    host_failures: int = 0
    """Mapper calls lost with their host (a node died) and sent to another host."""
    chunks_batched: int | None = None
    """Chunks answered through Message Batches, at the batch price (``batch=True``).

    The three batch counts are None on a run that neither created nor collected a batch, so
    that its report does not list counters of a feature it did not use."""
    batches: int | None = None
    """Message Batches created by this run (a resumed run collects earlier ones too)."""
    batch_retries: int | None = None
    """Batch requests that errored or expired, sent again as normal calls."""


class MapReduce(Architecture[MapReduceConfig, MapReduceResult]):
    """Chunks -> mappers on hosts spread over the cluster -> tree of combiners -> reducer."""

    name = "mapreduce"
    description = ("Mappers read a corpus in chunks across the cluster; a reducer answers from "
                   "their notes (tree-reduced when large; resumable).")
    config_class = MapReduceConfig
    roles = (
        RoleSpec(name="mapper", description="host actors, each serving many chunk mappers",
                 min_count=1, max_count=MAX_HOSTS, default_tier="haiku",
                 config_field="mapper_model"),
        RoleSpec(name="combiner", description="merges notes when they overflow the reducer",
                 default_tier="sonnet", config_field="reducer_model"),
        RoleSpec(name="reducer", description="answers the question from the notes",
                 default_tier="sonnet", config_field="reducer_model", final=True),
    )

    def role_counts(self) -> dict[str, int]:
        return {"mapper": self.config.mapper_hosts or 2, "combiner": 1, "reducer": 1}

    def check_input(self, task: Any) -> MapPlan:
        """Read and chunk the input before anything is spawned.

        Accepts a :class:`MapReduceTask` (or a dict of its fields), or a plain question over
        ``config.inputs``.

        Raises:
            EmptyInputError: no question, or nothing readable to map (the skipped inputs are
                listed with their reasons).
            ConfigError: the task is of the wrong type.
        """
        task = self._task(task)
        if not task.question.strip():
            raise EmptyInputError("mapreduce: the question is empty; say what to look for")
        corpus = load_corpus(list(task.inputs), limits=self.config.limits, root=self.config.root)
        if task.text:
            text = load_corpus(task.text)
            corpus = corpus.model_copy(update={"documents": text.documents + corpus.documents})
        plan = MapPlan.build(task.question.strip(), corpus, self.config.chunk_size,
                             self.config.chunk_overlap)
        if plan.chunk_count == 0:
            raise EmptyInputError(_nothing_to_map(task, corpus.skipped))
        return plan

    async def execute(self, task: MapPlan, run: RunContext) -> MapReduceResult:
        pool = await self._spawn_pool(run)
        # Spawning returns at once and the actor starts in the background, beside the hosts.
        reducer = await run.crew.agent("reducer")
        store = self._store(run.data_dir)
        phase = ["map"]  # combines start during the map phase and go on after it
        tree = TreeReducer(lambda notes, level: self._combine(notes, level, run, phase[0]),
                           self.config.reduce_budget_tokens - _PROMPT_OVERHEAD_TOKENS,
                           max_in_flight=self.config.max_parallel_combiners)
        retiring: asyncio.Task[None] | None = None
        closing: asyncio.Task[None] | None = None
        stop = asyncio.Event()  # the mapper hosts may be stopped
        warming: list[asyncio.Task[None]] = []
        try:
            # The reducer's start-up (a process importing the SDK: about a CPU second) runs
            # beside the hosts' own, not through the map phase's first waves on 2 cores; and
            # each agent pays its first call's one-time costs (Agent.warm) before the map
            # phase, not in its first wave or the answer (docs/performance.md, "The map
            # phase's wall time").
            nodes, *_ = await asyncio.gather(pool.nodes(), pool.warm(), reducer.warm.remote())
            try:
                stats = await self._map(task, run, pool, store, tree,
                                        all_sent=lambda: warming.append(
                                            asyncio.create_task(_warm_again(reducer))))
            except BaseException:
                await _release(pool)
                raise
            # The hosts' work is done: flush their records and give back their limiter stock
            # (a host lost with its node is skipped, not fatal) at once, while the reduce
            # runs; stop them once the answer streams: two processes' exit (~15-25 ms of CPU
            # on 2 cores) would slow the reducer's request. Waited for before the answer is
            # returned.
            retiring = asyncio.create_task(_release(pool, stop))
            if store is not None:  # nothing more to store: its close (a WAL checkpoint, 5-10
                # ms of disk after 2,000 chunks) runs in a thread, off the answer's path
                closing = asyncio.create_task(asyncio.to_thread(store.close))
            phase[0] = "reduce"
            await run.phase("reduce", "combining the notes", total=None)
            notes = await tree.finish()
            # The reducer lived through the map phase: if its node went meanwhile, its final
            # call waits for its restart instead of failing on the dead process. Asked while
            # the prompt is built.
            ready = asyncio.create_task(agent_handle.alive(reducer, "reducer"))
            try:
                await run.phase("answer", f"the reducer reads {len(notes)} notes", total=1)
                prompt = _reduce_prompt(task.question, notes)
            except BaseException:
                ready.cancel()
                raise
            await ready
            answer = await run.ask("reducer", prompt, topic="answer", final=True,
                                   max_tokens=self.config.reducer_max_tokens,
                                   on_first_text=stop.set)
        finally:
            for warm in warming:  # done long since, but after a failure it may not be
                warm.cancel()
            stop.set()
            if retiring is not None:
                await retiring
            await tree.aclose()
            if closing is not None:
                await closing
            elif store is not None:
                store.close()
        return run.result(
            MapReduceResult, output=answer.text, question=task.question,
            documents=len(task.corpus.documents), chunks=task.chunk_count,
            chunks_mapped=stats.mapped, chunks_reused=stats.reused,
            chunks_irrelevant=stats.irrelevant, skipped=task.corpus.skipped,
            combines=tree.combines, reduce_depth=tree.depth, mapper_nodes=nodes,
            host_failures=pool.host_failures, **_batch_counts(self.config.batch, stats))

    # -- steps ---------------------------------------------------------------------------------

    async def _spawn_pool(self, run: RunContext) -> MapperPool:
        """Spawn the hosts (this run stops them; they are not the session crew's agents)."""
        tier, model = self.model_for("mapper")
        hosts = self.config.mapper_hosts or default_host_count(self.config.max_parallel_mappers)
        pool = MapperPool.spawn(run.crew.backend, run_id=run.run_id, tier=tier, model=model,
                                hosts=hosts)
        if "mapper" not in run.agents:
            run.agents.append("mapper")
        for name in pool.handles:  # the hosts skip the crew: tell the plugins they exist
            key = host_key(name)
            run.crew.plugins.ctx.agent_names[key] = name
            await run.crew.plugins.fire("on_agent_spawn", key, AgentSpec(
                name=name, role="mapper", tier=tier, model=model, run_id=run.run_id,
                topology=self.name))
        return pool

    def _store(self, data_dir: Path) -> ChunkStore | None:
        """The resume store: ``store_dir``, else ``mapreduce/`` in the runtime's data dir."""
        if not self.config.resume:
            return None
        return ChunkStore((self.config.store_dir or data_dir / "mapreduce") / "chunks.sqlite3")

    async def _map(self, plan: MapPlan, run: RunContext, pool: MapperPool,
                   store: ChunkStore | None, tree: TreeReducer,
                   all_sent: Callable[[], None] | None = None) -> MapStats:
        tier, model = self.model_for("mapper")
        await run.phase("map", f"{plan.chunk_count} chunks of {len(plan.corpus.documents)} "
                        "documents", total=plan.chunk_count)
        phase = MapPhase(run=run, pool=pool, store=store, tree=tree,
                         system=self.prompt("mapper", question=plan.question), model=model,
                         tier=tier, max_tokens=self.max_tokens_for("mapper",
                                                                   self.config.mapper_max_tokens),
                         max_in_flight=self.config.max_parallel_mappers, all_sent=all_sent)
        if self.config.batch:
            return await BatchedMap(phase, self.config.batch_size).run_all(plan)
        return await phase.run_all(plan)

    async def _combine(self, notes: Sequence[Note], level: int, run: RunContext,
                       phase: str) -> Note:
        """One combiner call: several notes into one note of the level above."""
        question = str(run.variables.get("question", ""))
        sources = sum(n.sources for n in notes)
        # One more call than announced: grow the phase's total so progress stays exact.
        await run.phase(phase, f"combining {len(notes)} notes", total=1)
        finding = await run.ask("combiner", _reduce_prompt(question, notes),
                                topic=f"level {level + 1}",
                                max_tokens=self.config.reducer_max_tokens)
        first = min(n.order for n in notes)
        return Note(label=f"combined notes from {sources} chunks (from #{first + 1})",
                    text=finding.text.strip() or "(no notes)", order=first, level=level + 1,
                    sources=sources)

    def _task(self, task: Any) -> MapReduceTask:
        if isinstance(task, MapReduceTask):
            return task
        if isinstance(task, str):
            if not self.config.inputs:
                raise EmptyInputError("mapreduce: a plain question needs config.inputs; or "
                                      "pass MapReduceTask(question=..., inputs=[...])")
            return MapReduceTask(question=task, inputs=tuple(self.config.inputs))
        if isinstance(task, Mapping):
            try:
                return MapReduceTask.model_validate(dict(task))
            except ValidationError as exc:
                raise ConfigError(f"mapreduce: bad task: {exc.errors(include_url=False)}") \
                    from None
        raise ConfigError(f"mapreduce takes a MapReduceTask or a question, got "
                          f"{type(task).__name__}")


async def _warm_again(reducer: Any) -> None:
    """The reducer's per-run state made fresh again as the map phase ends (``Agent.warm``).

    Its budget answer, asked at the start, is older than ``budget_check.RECHECK_S`` after a
    long map phase, so its final call would first wait for a Ledger round trip, and at the
    moment the mapper hosts' last records reach the Ledger (5-10 ms on 2 cores,
    ``docs/performance.md``, "The reducer's final call"). Asked when the last chunk's call starts,
    a wave before the end, the answer is fresh when the call comes. Best effort, as at the
    start: a warm that fails leaves that to the call.
    """
    try:
        await reducer.warm.remote()
    except Exception as exc:
        log.debug("the reducer could not warm up again (%s); its call does it",
                  type(exc).__name__)


async def _release(pool: MapperPool, stop: asyncio.Event | None = None) -> None:
    """The hosts' records flushed and limiter stock given back, then the hosts stopped (once
    ``stop`` is set, if given)."""
    await pool.retire()
    if stop is not None:
        await stop.wait()
    pool.stop()


def _reduce_prompt(question: str, notes: Sequence[Note]) -> str:
    if not notes:
        return (f"Question: {question}\n\nNo part of the corpus had anything on the question. "
                "Say so, briefly.")
    sources = sum(n.sources for n in notes)
    return (f"Question: {question}\n\nNotes from {sources} chunks:\n\n{render_notes(notes)}")


def _nothing_to_map(task: MapReduceTask, skipped: Sequence[SkippedFile]) -> str:
    if not task.inputs and not task.text:
        return "mapreduce: no input; give files, folders, globs or text to read"
    shown = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    return (f"mapreduce: nothing to map in {', '.join(task.inputs) or 'the text'}"
            + (f"; skipped {shown}{more}" if skipped else ""))



def _batch_counts(batch: bool, stats: MapStats) -> dict[str, int | None]:
    """The result's batch counters, or None for each on a run that touched no batch."""
    if not (batch or stats.batches or stats.batched or stats.batch_retries):
        return {"chunks_batched": None, "batches": None, "batch_retries": None}
    return {"chunks_batched": stats.batched, "batches": stats.batches,
            "batch_retries": stats.batch_retries}
