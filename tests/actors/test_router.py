"""The router's decision tree and reply judging, without Ray (pure functions)."""

from __future__ import annotations

import doctest

import pytest
from pydantic import BaseModel

import actors.router
import emulator.batch_limits
from actors.messages import AskRequest
from actors.router import reply_problem, route


class City(BaseModel):
    city: str


@pytest.mark.parametrize("module", [actors.router, emulator.batch_limits])
def test_docstring_examples_hold(module: object) -> None:
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert tried > 0 and failures == 0


@pytest.mark.parametrize(("request_", "tier"), [
    (AskRequest(prompt="Extract the dates."), "haiku"),
    (AskRequest(prompt="Extract the dates.", max_tokens=4_000), "sonnet"),  # a long answer
    (AskRequest(prompt="Extract the dates. " * 1_000), "sonnet"),           # a long prompt
    (AskRequest(prompt="Summarize the medical record."), "opus"),           # critical first
    (AskRequest(prompt="Find the river.", system="Analyze everything."), "haiku"),
])
def test_the_decision_tree_reads_the_task_not_the_instructions(request_: AskRequest,
                                                               tier: str) -> None:
    assert route(request_) == tier


def test_a_reply_is_judged_by_its_schema_and_its_check() -> None:
    schema = AskRequest(prompt="x", output_schema=City)
    assert reply_problem('{"city": "Oslo"}', schema) is None
    assert reply_problem('```json\n{"city": "Oslo"}\n```', schema) is None
    assert "not a valid City" in (reply_problem("Oslo", schema) or "")
    checked = AskRequest(prompt="x", check=lambda text: 1 / 0)
    assert reply_problem("anything", checked) == "the reply check raised ZeroDivisionError"
    assert reply_problem("anything", AskRequest(prompt="x")) is None
