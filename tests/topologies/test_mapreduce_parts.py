"""Map-reduce's parts without Ray: chunks, the resume store's keys, the streaming tree reduce."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from actors.messages import AskRequest, Reply, Usage
from tests.polling import wait_for_async
from topologies.chunk_store import ChunkStore, chunk_key
from topologies.chunking import chunk_spans, text_tokens
from topologies.corpus import load_corpus
from topologies.mapreduce_run import MapPhase, MapPlan
from topologies.reduce_tree import Note, TreeReducer

PROSE = " ".join(f"Sentence {i} tells of the river and the bridge." for i in range(400))


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


@pytest.mark.parametrize(("chunk", "overlap"), [(50, 0), (50, 10), (200, 100), (7, 3)])
def test_chunks_fit_the_budget_overlap_and_cover_every_word_in_order(chunk: int,
                                                                     overlap: int) -> None:
    spans = chunk_spans(PROSE, chunk, overlap)
    pieces = [PROSE[a:b] for a, b in spans]
    assert all(text_tokens(p) <= chunk for p in pieces)
    # Consecutive chunks overlap (or meet across whitespace) and always move forward.
    for (a1, b1), (a2, _) in itertools.pairwise(spans):
        assert a1 < a2 and (a2 < b1 if overlap else not PROSE[b1:a2].strip())
    assert spans[0][0] == 0 and spans[-1][1] == len(PROSE)
    if overlap == 0:
        assert [w for p in pieces for w in _words(p)] == _words(PROSE)


def test_a_cut_prefers_a_paragraph_break_then_a_sentence_end() -> None:
    paragraph = "one two three four five six seven eight nine ten eleven twelve."
    text = paragraph + "\n\nThirteen fourteen. Fifteen sixteen seventeen eighteen."
    # 26 tokens would reach "fourteen." (a sentence end); the paragraph break wins.
    assert text[slice(*chunk_spans(text, chunk_tokens=26)[0])] == paragraph
    text = "one two three four five six seven. Eight nine ten eleven twelve thirteen"
    assert text[slice(*chunk_spans(text, chunk_tokens=14)[0])] == \
        "one two three four five six seven."


def test_a_word_longer_than_a_chunk_is_split_hard_and_multibyte_text_stays_in_budget() -> None:
    blob = "A" * 100 + " é" * 50
    spans = chunk_spans(blob, chunk_tokens=10)
    assert all(text_tokens(blob[a:b]) <= 10 for a, b in spans)
    pieces = [blob[a:b] for a, b in spans]
    assert set(pieces[0]) == {"A"} and len(pieces[0]) < 100
    assert "".join(pieces).replace(" ", "") == blob.replace(" ", "")


@pytest.mark.parametrize(("chunk", "overlap"), [(0, 0), (10, 6), (10, -1)])
def test_impossible_sizes_are_refused(chunk: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunk_spans("some text", chunk, overlap)


def test_a_chunk_key_changes_with_every_input_that_decides_the_answer() -> None:
    base = {"model": "claude-haiku-5-5", "system": "Find dates.", "prompt": "chunk",
            "max_tokens": 256}
    keys = {chunk_key(**base)}  # type: ignore[arg-type]
    for field, other in (("model", "claude-sonnet-5-5"), ("system", "Find names."),
                         ("prompt", "chunk!"), ("max_tokens", 512)):
        keys.add(chunk_key(**{**base, field: other}))  # type: ignore[arg-type]
    assert len(keys) == 5 and chunk_key(**base) in keys  # type: ignore[arg-type]


def test_stored_results_survive_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "mr" / "chunks.sqlite3"
    store = ChunkStore(path)
    store.put("k1", "first")
    store.put("k1", "replaced")
    store.close()
    again = ChunkStore(path)
    assert (again.get("k1"), again.get("k2"), again.count()) == ("replaced", None, 1)
    again.close()


def test_a_store_closed_from_a_worker_thread_keeps_every_result(tmp_path: Path) -> None:
    """A run closes its store in a thread (the close checkpoints the WAL: disk work kept off
    the driver's loop); what the loop stored is all there, and the WAL is folded in."""
    path = tmp_path / "chunks.sqlite3"
    store = ChunkStore(path)
    for i in range(200):
        store.put(f"k{i}", f"note {i}")
    asyncio.run(asyncio.to_thread(store.close))
    assert not path.with_name(path.name + "-wal").exists()
    again = ChunkStore(path)
    assert (again.count(), again.get("k199")) == (200, "note 199")
    again.close()


class _Summer:
    """A combine that adds numbers, and records how much each call read."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.read: list[int] = []
        self.fail_at = fail_at

    async def __call__(self, notes: Sequence[Note], level: int) -> Note:
        await asyncio.sleep(0)
        self.read.append(sum(n.tokens for n in notes))
        if self.fail_at is not None and len(self.read) == self.fail_at:
            raise RuntimeError("combiner failed")
        return Note(label="sum", text=str(sum(int(n.text) for n in notes)),
                    order=min(n.order for n in notes), level=level + 1,
                    sources=sum(n.sources for n in notes))


def test_the_tree_combines_within_budget_and_loses_nothing() -> None:
    summer = _Summer()

    async def run() -> list[Note]:
        tree = TreeReducer(summer, budget_tokens=60, max_in_flight=2)
        # Arrival order differs from corpus order, as it does with concurrent mappers.
        for i in [*range(1, 300, 2), *range(0, 300, 2)]:
            await tree.add(Note(label=f"doc {i}", text=str(i), order=i))
        return await tree.finish()

    final = asyncio.run(run())
    assert sum(int(n.text) for n in final) == sum(range(300))
    assert sum(n.sources for n in final) == 300
    assert sum(n.tokens for n in final) <= 60 and max(summer.read) <= 60
    assert len(summer.read) > 10


def test_notes_that_fit_are_not_combined_at_all() -> None:
    summer = _Summer()

    async def run() -> list[Note]:
        tree = TreeReducer(summer, budget_tokens=1_000)
        for i in (3, 1, 2):
            await tree.add(Note(label=f"doc {i}", text=str(i), order=i))
        return await tree.finish()

    assert [n.text for n in asyncio.run(run())] == ["1", "2", "3"]
    assert summer.read == []


def test_a_failed_combine_fails_the_reduce() -> None:
    async def run() -> None:
        tree = TreeReducer(_Summer(fail_at=2), budget_tokens=30)
        try:
            for i in range(100):
                await tree.add(Note(label=f"d{i}", text="1", order=i))
            await tree.finish()
        finally:
            await tree.aclose()

    with pytest.raises(RuntimeError, match="combiner failed"):
        asyncio.run(run())


def _open_and_put(path: str, start: object, outcomes: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    try:
        ChunkStore(Path(path)).put("k", "v")
        outcomes.put("ok")  # type: ignore[attr-defined]
    except Exception as exc:
        outcomes.put(repr(exc))  # type: ignore[attr-defined]


def test_runs_started_together_on_one_data_dir_all_open_its_chunk_store(tmp_path: Path) -> None:
    # Two `raytroupe run mapreduce` at once on a fresh data dir: each process opens the new
    # file and switches it to WAL; SQLite answered one of them "database is locked" at once.
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for attempt in range(8):
        path = str(tmp_path / f"try-{attempt}" / "chunks.sqlite3")
        start, outcomes = context.Barrier(4), context.Queue()
        openers = [context.Process(target=_open_and_put, args=(path, start, outcomes))
                   for _ in range(4)]
        for opener in openers:
            opener.start()
        for opener in openers:
            opener.join(timeout=60)
        assert [outcomes.get(timeout=10) for _ in openers] == ["ok"] * 4
        assert ChunkStore(Path(path)).get("k") == "v"


class _Pool:
    """Stands in for the mapper hosts (no Ray needed for the loop's order): answers each ask
    after ``gate`` opens, and logs when each was asked."""

    def __init__(self, log: list[str], fail: str | None = None) -> None:
        self.log, self.fail = log, fail
        self.gate = asyncio.Event()

    async def ask(self, request: AskRequest) -> Reply:
        source = request.prompt.splitlines()[0]
        self.log.append(source)
        await self.gate.wait()
        if source == self.fail:
            raise RuntimeError("mapper failed")
        return Reply(text="a note", agent="r/mapreduce/mapper-1", tier="haiku", model="m")


def _phase(pool: _Pool, log: list[str], in_flight: int) -> MapPhase:
    async def nothing(*_: object) -> None:
        return None

    run = SimpleNamespace(run_id="r", emit=nothing, usage=Usage(), cost_usd=Decimal(0),
                          crew=SimpleNamespace(plugins=SimpleNamespace(fire=nothing)))
    tree = TreeReducer(lambda notes, level: nothing(), budget_tokens=100_000)
    return MapPhase(run=run, pool=pool, store=None, tree=tree, system="s",  # type: ignore[arg-type]
                    model="m", tier="haiku", max_tokens=16, max_in_flight=in_flight,
                    all_sent=lambda: log.append("all sent"))


def _plan(chunks: int) -> MapPlan:
    text = "\n\n".join(f"Record {i} reads the gauge by the old mill bridge." for i in range(chunks))
    return MapPlan.build("Which gauge?", load_corpus(text), chunk_tokens=20, overlap_tokens=0)


def test_the_map_phase_says_once_when_every_chunk_is_sent_before_its_replies_are_in() -> None:
    """Map-reduce warms its reducer again there, a wave before the map phase ends."""
    log: list[str] = []
    pool = _Pool(log)

    async def run() -> None:
        async def said() -> bool:
            return "all sent" in log and len(log) == 7

        mapping = asyncio.create_task(_phase(pool, log, in_flight=10).run_all(_plan(6)))
        await wait_for_async(said, "the six asks and the word")
        assert not mapping.done()  # said while the calls were still in flight
        pool.gate.set()
        assert (await mapping).mapped == 6

    asyncio.run(run())
    assert log.count("all sent") == 1


def test_a_map_phase_stopped_by_a_failure_never_says_every_chunk_is_sent() -> None:
    log: list[str] = []
    pool = _Pool(log, fail="Source: <text> part 1/6")
    pool.gate.set()
    with pytest.raises(RuntimeError, match="mapper failed"):
        asyncio.run(_phase(pool, log, in_flight=1).run_all(_plan(6)))
    assert "all sent" not in log
