"""Consumer actors for the channel tests: an inbox that records, can hold its callers, and a
stage that turns one message type into another."""

from __future__ import annotations

import asyncio
from typing import Literal

import ray
from pydantic import BaseModel


class Note(BaseModel):
    """The message the test channels carry."""

    kind: Literal["note"] = "note"
    seq: int
    body: str = ""


class Memo(BaseModel):
    """Another type, for the wrong-type tests."""

    kind: Literal["memo"] = "memo"
    text: str


class Receipt(BaseModel):
    """What the inbox answers."""

    seq: int
    size: int


@ray.remote(num_cpus=0)
class Inbox:
    """Records every message in arrival order; holds callers while its gate is closed."""

    def __init__(self, gated: bool = False) -> None:
        self.got: list[int] = []
        self.sizes: list[int] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.active = 0

    async def receive(self, note: Note) -> Receipt:
        self.got.append(note.seq)
        self.sizes.append(len(note.body))
        self.active += 1
        await self.gate.wait()
        self.active -= 1
        return Receipt(seq=note.seq, size=len(note.body))

    async def open(self) -> None:
        self.gate.set()

    async def state(self) -> tuple[list[int], int]:
        return list(self.got), self.active

    async def sizes_seen(self) -> list[int]:
        return list(self.sizes)


@ray.remote(num_cpus=0)
class Stamper:
    """A stage: turns a Memo into a Note (its reply feeds the next channel unfetched)."""

    async def stamp(self, memo: Memo) -> Note:
        return Note(seq=len(memo.text), body=memo.text.upper())
