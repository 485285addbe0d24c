"""What the storm (D2) and outage (D16) drills share: a responder that fails every request for a
window of time, and asks kept ``in_flight`` at a time."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from actors.messages import AskRequest, Reply
from emulator.responders import ScriptedError


class FaultWindow:
    """A responder: plain replies, then ``error()`` for ``length_s`` from the ``after``-th
    request. ``in_window`` counts the requests that arrived inside the window."""

    def __init__(self, after: int, length_s: float, error: Callable[[], ScriptedError],
                 reply: str = "The gauge showed three metres.") -> None:
        self.after, self.length_s, self.error, self.reply = after, length_s, error, reply
        self.seen, self.in_window = 0, 0
        self.started: float | None = None
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        now = time.monotonic()
        with self.lock:
            self.seen += 1
            if self.started is None and self.seen > self.after:
                self.started = now
            failing = self.started is not None and now < self.started + self.length_s
            self.in_window += failing
        if failing:
            raise self.error()
        return self.reply


async def ask_all(agents: list[Any], calls: int, in_flight: int) -> list[Reply | BaseException]:
    """``calls`` asks over ``agents``, ``in_flight`` at a time; an error is returned, not raised."""
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> Reply | BaseException:
        async with gate:
            try:
                return await agents[i % len(agents)].ask.remote(
                    AskRequest(prompt=f"Drill call {i}", max_tokens=20))
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(i) for i in range(calls)))
