"""Tools for the Agent tests, at module level so they pickle by reference into the actor.

The Agent runs each tool call in a process of its own (``actors/tools.py``), so the two tools
meet through files: each waits until the other has started. Run one after the other, they
would time out (30 s).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

MEET_DIR = Path(tempfile.gettempdir()) / "raytroupe-tool-meet"  # nosec B108 - a test rendezvous


def _meet(meet: str, me: str, other: str) -> None:
    MEET_DIR.mkdir(exist_ok=True)
    (MEET_DIR / f"{meet}.{me}").touch()
    deadline = time.monotonic() + 30
    while not (MEET_DIR / f"{meet}.{other}").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{other} never started alongside {me}")
        time.sleep(0.01)  # a tool's own process, not an actor's loop


def lookup(city: str, meet: str) -> str:
    """Weather of a city."""
    _meet(meet, "lookup", "explode")
    return f"sunny in {city}"


def explode(reason: str, meet: str) -> str:
    """Always fails."""
    _meet(meet, "explode", "lookup")
    raise RuntimeError(reason)


def exit_process(code: int) -> str:
    """Ends its own process at once (a tool with a fatal bug)."""
    os._exit(code)


def kill_process(signal_number: int) -> str:
    """Kills its own process with a signal (a segfault, the OOM killer)."""
    os.kill(os.getpid(), signal_number)
    return "unreachable"
