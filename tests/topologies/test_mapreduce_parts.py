"""Map-reduce's parts without Ray: chunks, the resume store's keys, the streaming tree reduce."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from topologies.chunk_store import ChunkStore, chunk_key
from topologies.chunking import chunk_spans, text_tokens
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
