"""Tools for the Agent tests, at module level so they pickle by reference into the actor."""

from __future__ import annotations

import threading

# Both tools wait on one barrier: run one after the other, they would break it (10 s timeout).
BARRIER = threading.Barrier(2, timeout=10)


def lookup(city: str) -> str:
    """Weather of a city."""
    BARRIER.wait()
    return f"sunny in {city}"


def explode(reason: str) -> str:
    """Always fails."""
    BARRIER.wait()
    raise RuntimeError(reason)
