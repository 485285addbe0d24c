"""Streaming tree reduce: combine mapped notes as they arrive, under a reducer's token budget.

Why a tree: 20,000 mapped notes do not fit in any reducer's context, and holding them all
until the end would put them all in the driver's memory. Notes are grouped per level as they
arrive; when the next note would push a level's group past the budget, the group is sent to
``combine`` (an LLM call) and the combined note joins the level above. Memory is bounded by a
budget's worth of notes per level plus the combines in flight, and the combining overlaps the
mapping. At the end, :meth:`TreeReducer.finish` combines what is left until it fits in one
budget, and hands those notes to the final answer.

Progress is guaranteed as long as every note is at most half the budget (a group always holds
at least two notes before it is combined, and a combined note is one note): the map-reduce
config checks that its token caps allow it.

Example:
    >>> async def combine(notes, level):
    ...     total = sum(int(n.text) for n in notes)
    ...     return Note(label="sum", text=str(total), order=notes[0].order, level=level + 1)
    >>> async def demo():
    ...     tree = TreeReducer(combine, budget_tokens=12)
    ...     for i in range(10):
    ...         await tree.add(Note(label=f"c{i}", text="1", order=i))
    ...     return sum(int(n.text) for n in await tree.finish())
    >>> asyncio.run(demo())
    10
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from actors.token_estimate import text_tokens

__all__ = ["Combine", "Note", "TreeReducer", "render_notes"]


class Note(BaseModel):
    """A mapped or combined piece of evidence on its way to the final answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["note"] = "note"
    label: str
    """Where it came from: ``docs/a.md part 2/5``, or ``combined 1.3 (12 chunks)``."""
    text: str
    order: int = Field(ge=0)
    """Position of its first chunk in the corpus: notes are combined in document order."""
    level: int = Field(default=0, ge=0)
    """0 for a mapped chunk; a combination of level-k notes is level k + 1."""
    sources: int = Field(default=1, ge=1)
    """How many chunks it covers."""

    @property
    def tokens(self) -> int:
        """Estimated tokens of the note as rendered into a reducer's prompt."""
        return text_tokens(_render(self)) + 2


Combine = Callable[[Sequence["Note"], int], Awaitable["Note"]]
"""``combine(notes, level)``: one LLM call turning notes into a single note of ``level + 1``."""


def render_notes(notes: Sequence[Note]) -> str:
    """The notes as one prompt, in document order, each under its label."""
    return "\n\n".join(_render(n) for n in sorted(notes, key=lambda n: n.order))


def _render(note: Note) -> str:
    return f"### {note.label}\n{note.text}"


class _Group:
    """One level's notes waiting to be combined."""

    __slots__ = ("notes", "tokens")

    def __init__(self) -> None:
        self.notes: list[Note] = []
        self.tokens = 0

    def take(self) -> list[Note]:
        notes, self.notes, self.tokens = self.notes, [], 0
        return notes


class TreeReducer:
    """Groups notes per level and combines each full group, with bounded combines in flight.

    Args:
        combine: The LLM call that merges notes (see :data:`Combine`).
        budget_tokens: Most estimated tokens of notes one combine (or the final answer) reads.
        max_in_flight: Combines running at once; ``add`` waits beyond it (backpressure).
    """

    def __init__(self, combine: Combine, budget_tokens: int, *, max_in_flight: int = 4) -> None:
        if budget_tokens <= 0 or max_in_flight <= 0:
            raise ValueError("budget_tokens and max_in_flight must be positive")
        self._combine, self.budget = combine, budget_tokens
        self._max_in_flight = max_in_flight
        self._groups: list[_Group] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: BaseException | None = None
        self.combines = 0
        """Combine calls started so far."""
        self.depth = 0
        """Highest level of any note so far (0: nothing was combined yet)."""

    def __repr__(self) -> str:
        waiting = [len(g.notes) for g in self._groups]
        return f"TreeReducer(budget={self.budget}, waiting={waiting}, in_flight={len(self._tasks)})"

    async def add(self, note: Note) -> None:
        """Add a note; start a combine if its level's group is full.

        Raises:
            Exception: whatever an earlier combine raised (the reduce cannot be right without it).
        """
        self._raise_if_failed()
        full = self._place(note)
        if full:
            await self._wait_for_room()
            self._start(full)

    async def finish(self) -> list[Note]:
        """Wait for running combines, then combine the rest until it fits in one budget.

        Returns:
            Notes in document order whose rendering fits in ``budget_tokens`` (or one note).
        """
        await self._drain()
        notes = sorted((n for g in self._groups for n in g.take()), key=lambda n: n.order)
        while len(notes) > 1 and sum(n.tokens for n in notes) > self.budget:
            batches = _pack(notes, self.budget)
            merged = [b[0] for b in batches if len(b) == 1]
            for batch in (b for b in batches if len(b) > 1):
                await self._wait_for_room()
                self._start(batch, keep=merged)
            await self._drain()
            notes = sorted(merged, key=lambda n: n.order)
        return notes

    async def aclose(self) -> None:
        """Cancel combines still running (after a failure elsewhere)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- internals -----------------------------------------------------------------------------

    def _group(self, level: int) -> _Group:
        while len(self._groups) <= level:
            self._groups.append(_Group())
        return self._groups[level]

    def _place(self, note: Note) -> list[Note]:
        """Put ``note`` in its level's group; return the group's old notes if it was full."""
        group = self._group(note.level)
        tokens = note.tokens  # computed from the rendered text: once per note
        full = group.take() if (group.tokens + tokens > self.budget
                                and len(group.notes) >= 2) else []
        group.notes.append(note)
        group.tokens += tokens
        self.depth = max(self.depth, note.level)
        return full

    async def _wait_for_room(self) -> None:
        while len(self._tasks) >= self._max_in_flight:
            await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            self._raise_if_failed()

    def _start(self, notes: list[Note], keep: list[Note] | None = None) -> None:
        """Run one combine as a task; its note joins the level above (or ``keep``)."""
        self.combines += 1
        level = max(n.level for n in notes)
        task = asyncio.create_task(self._run(notes, level, keep))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, notes: list[Note], level: int, keep: list[Note] | None) -> None:
        try:
            note = await self._combine(sorted(notes, key=lambda n: n.order), level)
        except BaseException as exc:
            if self._error is None and not isinstance(exc, asyncio.CancelledError):
                self._error = exc
            raise
        if keep is not None:
            self.depth = max(self.depth, note.level)
            keep.append(note)
        elif full := self._place(note):
            # Started from inside a combine, so it does not wait for room: waiting here on
            # the other combines could deadlock when they all cascade at once. Cascades are
            # rare (each level fills a budget's worth of notes more slowly than the one below).
            self._start(full)

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))
            self._raise_if_failed()
        self._raise_if_failed()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


def _pack(notes: Sequence[Note], budget: int) -> list[list[Note]]:
    """Consecutive batches of at most ``budget`` tokens; a batch of one only when it must."""
    batches: list[list[Note]] = [[]]
    used = 0
    for note in notes:
        if batches[-1] and used + note.tokens > budget and len(batches[-1]) >= 2:
            batches.append([])
            used = 0
        batches[-1].append(note)
        used += note.tokens
    return batches
