"""The tests' one way to wait for something that happens elsewhere: poll it, with a bound.

Tests never sleep a fixed time hoping something happened; they poll a condition often and fail
with what they were waiting for once ``timeout_s`` is up. Sync probes (a Ray ``get``, an
emulator's stats) use :func:`wait_for`; async ones (an actor call awaited on the test's loop)
use :func:`wait_for_async`. Both return the probe's first truthy value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str = "the condition", *,
             timeout_s: float = 30.0, every_s: float = 0.02) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)  # the test's own thread, not an actor's loop
    return value


async def wait_for_async(probe: Callable[[], Awaitable[T]], what: str = "the condition", *,
                         timeout_s: float = 30.0, every_s: float = 0.02) -> T:
    """Await ``probe()`` until it gives something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (value := await probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(every_s)
    return value
