"""The topology tests' rig: a runtime over one emulator, scripted replies and what was asked."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

import cluster
from actors.tiers import load_price_table


@dataclass(frozen=True)
class Asked:
    """One request the emulator received: on which tier, with which system and user turn."""

    tier: str
    model: str
    system: str
    user: str


@dataclass
class Script:
    """A responder that answers with ``answer(asked)`` and keeps every request, in order."""

    answer: Callable[[Asked], Any]
    asked: list[Asked] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> Any:
        model = body["model"]
        asked = Asked(tier=load_price_table().tier_of(model), model=model,
                      system=_text(body.get("system")), user=_text(body["messages"][-1]["content"]))
        with self.lock:
            self.asked.append(asked)
        return self.answer(asked)

    def by(self, marker: str) -> list[Asked]:
        """Requests whose system prompt contains ``marker``, in arrival order."""
        return [a for a in self.asked if marker in a.system]


@dataclass
class TopologyRig:
    """A runtime wired to one emulator; script its replies for the length of a block."""

    runtime: cluster.Runtime
    emulator: Any

    @contextlib.contextmanager
    def script(self, answer: Callable[[Asked], Any]) -> Iterator[Script]:
        script = Script(answer)
        self.emulator.reset()
        self.emulator.set_responder(script)
        try:
            yield script
        finally:
            self.emulator.set_responder(None)

    def rollup(self, run_id: str, by: str = "agent") -> dict[str, Any]:
        """The Ledger's roll-up of a run, by key."""
        return {r.key: r for r in ray.get(self.runtime.ledger.rollup.remote(run_id, by))}


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # A tool result's text is in its ``content``: show it as the turn's text.
    return "\n".join(block.get("text") or _text(block.get("content"))
                     for block in content if isinstance(block, dict))
