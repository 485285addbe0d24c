"""An Agent's process tunes its garbage collector for the call path; other processes do not.

With CPython's defaults a host spent about a tenth of its CPU per call in the collector
(``actors/call_gc.py``, ``docs/performance.md``).
"""

from __future__ import annotations

import gc
from typing import Any

import ray

from actors import call_gc
from actors.messages import AskRequest
from tests.actors.agent_fixtures import Rig


def _collector(agent: Any) -> tuple[int, int]:
    """The agent process's young-generation threshold and frozen-object count."""
    return ray.get(agent.__ray_call__.remote(
        lambda _self: (gc.get_threshold()[0], gc.get_freeze_count())))


def test_an_agent_process_freezes_its_start_up_objects_and_collects_young_ones_less_often(
        rig: Rig) -> None:
    agent, _ = rig.agent()
    reply = ray.get(agent.ask.remote(AskRequest(prompt="Hello")))
    assert reply.text
    threshold, frozen = _collector(agent)
    assert threshold == call_gc.YOUNG_THRESHOLD
    assert frozen > 10_000  # Ray, the SDK, pydantic: out of every full collection's walk


def test_a_process_that_is_not_an_actor_keeps_its_collector_as_it_was() -> None:
    before = gc.get_threshold(), gc.get_freeze_count()
    assert call_gc.tune_for_calls() is False
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
