"""Automatic prompt caching: where the marks go, and what the emulator bills for them."""

from __future__ import annotations

import copy
import doctest
import importlib
from typing import Any

import pytest
import ray

from actors.messages import AskRequest, Turn
from actors.prompt_breakpoints import count_marks, with_breakpoints
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens

LONG = "Rules: " + " ".join(f"rule {i}: flag clause {i} when it shifts liability."
                            for i in range(300))
MARK = {"type": "ephemeral"}


def _params(system: str = LONG, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "system": [{"type": "text", "text": system}],
            "messages": [{"role": "user", "content": "Review clause 1."}], **extra}


def test_a_long_system_prompt_is_marked_and_a_short_one_is_not() -> None:
    assert with_breakpoints(_params(), 2048)["system"][0]["cache_control"] == MARK
    assert "cache_control" not in with_breakpoints(_params("Be terse."), 2048)["system"][0]
    assert with_breakpoints(_params(), 2048)["messages"][-1]["content"] == "Review clause 1."


def test_tools_and_history_are_marked_and_the_input_is_not_changed() -> None:
    tools = [{"name": f"t{i}", "description": LONG, "input_schema": {"type": "object"}}
             for i in range(2)]
    history = [{"role": "user", "content": LONG}, {"role": "assistant", "content": "Noted."}]
    params = _params("Be terse.", tools=tools)
    params["messages"] = [*history, params["messages"][0]]
    before = copy.deepcopy(params)
    marked = with_breakpoints(params, 1024)
    assert params == before
    assert marked["tools"][-1]["cache_control"] == MARK and "cache_control" not in \
        marked["tools"][0]
    assert marked["system"][0]["cache_control"] == MARK  # tools + system pass the minimum
    assert marked["messages"][1]["content"] == [{"type": "text", "text": "Noted.",
                                                 "cache_control": MARK}]
    assert count_marks(marked) == 3


def test_never_more_than_four_marks_counting_the_callers() -> None:
    blocks = [{"type": "text", "text": LONG, "cache_control": MARK} for _ in range(3)]
    params = _params(messages=[{"role": "user", "content": blocks},
                               {"role": "assistant", "content": "ok"},
                               {"role": "user", "content": "next"}])
    marked = with_breakpoints(params, 1024)
    assert count_marks(marked) == 4
    assert "cache_control" in marked["system"][0] and marked["messages"][1]["content"] == "ok"


def test_mappers_sharing_a_system_prompt_write_once_then_read(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("haiku", system=LONG * 2)
    replies = [ray.get(agent.ask.remote(AskRequest(prompt=f"Chunk {i}.", max_tokens=20)))
               for i in range(3)]
    ray.get(agent.flush.remote())

    written = replies[0].usage.cache_write_5m
    assert written > 2048 and [r.usage.cache_read for r in replies] == [0, written, written]
    tokens, usd = bill(rig.emulator.stats())
    [rolled] = ray.get(rig.runtime.ledger.rollup.remote(run_id, "agent"))
    assert ledger_tokens(rolled) == tokens and rolled.cost_usd == usd
    assert rolled.prompt_cache_hit_rate and rolled.prompt_cache_hit_rate > 0.6


def test_off_sends_no_marks_and_history_is_marked_for_the_next_turn(rig: Rig) -> None:
    rig.emulator.reset()
    off, _ = rig.agent("haiku", system=LONG * 2, prompt_cache=False)
    assert ray.get(off.ask.remote(AskRequest(prompt="Chunk 0."))).usage.cache_write_5m == 0
    agent, _ = rig.agent("haiku", role="chat")
    history = (Turn(role="user", content=LONG * 2), Turn(role="assistant", content="Noted."))
    first, second = (ray.get(agent.ask.remote(AskRequest(prompt=p, history=history)))
                     for p in ("Clause 1?", "Clause 2?"))
    assert first.usage.cache_write_5m > 2048 and second.usage.cache_read == \
        first.usage.cache_write_5m


@pytest.mark.parametrize("name", ["actors.prompt_breakpoints", "actors.response_cache"])
def test_docstring_examples_hold(name: str) -> None:
    failures, tried = doctest.testmod(importlib.import_module(name),
                                      optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
