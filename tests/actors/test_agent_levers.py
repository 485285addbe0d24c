"""Speculative first-of-N and adaptive routing with escalation, end to end.

Real Ray, the real SDK over HTTP, the emulator; after every lever the Ledger must equal the
emulator's bill, speculative losers and escalated replies included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from pydantic import BaseModel, ValidationError

from actors.errors import ConfigError, InvalidReply
from actors.ledger_journal import JOURNAL_NAME, read_entries
from actors.messages import AskRequest, Reply
from emulator import run_emulator
from emulator.config import Faults
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens
from tests.polling import wait_for


class Answer(BaseModel):
    city: str


def _ask(agent: Any, prompt: str = "Find the capital of Norway.", **kw: Any) -> Reply:
    return ray.get(agent.ask.remote(AskRequest(prompt=prompt, **kw)))


def _records(rig: Rig, run_id: str) -> list[Any]:
    """The run's records as the Ledger journaled them (after the agent's flush)."""
    path = rig.runtime.settings.data_dir / JOURNAL_NAME
    return [e.record for e in read_entries(path, run_id)]


@pytest.fixture(scope="module")
def slow_tail() -> Iterator[Any]:
    """Realistic latency where half the replies start 3 s late: the tail speculation cuts."""
    with run_emulator(profile="realistic", seed=7,
                      faults=Faults(slow=0.5, slow_s=3.0)) as emu:
        yield emu


def _assert_ledger_is_the_bill(rig: Rig, emu: Any, run_id: str, replies: list[Reply]) -> None:
    # A cancelled loser's handler bills when it next writes, after we hung up: wait for it.
    wait_for(lambda: emu.stats()["in_flight"] == 0, "the cancelled streams to be billed")
    tokens, usd = bill(emu.stats())
    totals = rig.ledger_totals(run_id)
    ledger = ledger_tokens(totals)
    assert totals.cost_usd == sum(r.cost_usd for r in replies)
    # Exact but for one thing no client can count: output a loser's server wrote after we hung
    # up (the real API bills what the model generated). Input, cache and every winner's output
    # match to the token; a loser's output may trail by the few tokens on the wire at cancel.
    losers = sum(r.speculative_losers for r in replies)
    assert {k: v for k, v in ledger.items() if k != "output_tokens"} == \
        {k: v for k, v in tokens.items() if k != "output_tokens"}
    assert 0 <= tokens["output_tokens"] - ledger["output_tokens"] <= 2 * losers
    assert totals.cost_usd <= usd
    if tokens["output_tokens"] == ledger["output_tokens"]:
        assert totals.cost_usd == usd


def test_speculation_keeps_the_first_reply_and_bills_every_loser(rig: Rig,
                                                                 slow_tail: Any) -> None:
    slow_tail.reset()
    agent, run_id = rig.agent("haiku", emulator=slow_tail)
    replies = [_ask(agent, f"Find item {i}.", max_tokens=40, speculative=3) for i in range(4)]
    ray.get(agent.flush.remote())

    records = _records(rig, run_id)
    assert len(records) == 12 and all(r.speculative for r in records)
    assert sum(r.speculative_losers for r in replies) == 8
    assert sum(r.status == "cancelled" for r in records) >= 4  # slow losers are cut at once
    _assert_ledger_is_the_bill(rig, slow_tail, run_id, replies)


def test_speculation_across_tiers_answers_from_one_of_them(rig: Rig, slow_tail: Any) -> None:
    slow_tail.reset()
    agent, run_id = rig.agent("haiku", emulator=slow_tail)
    reply = _ask(agent, max_tokens=30, speculative=2, speculative_tiers=("haiku", "sonnet"))
    ray.get(agent.flush.remote())

    assert reply.tier in ("haiku", "sonnet") and reply.speculative_losers == 1
    assert {r.tier for r in _records(rig, run_id)} == {"haiku", "sonnet"}
    _assert_ledger_is_the_bill(rig, slow_tail, run_id, [reply])


def test_an_agent_policy_speculates_without_asking(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("haiku", speculative=2)
    reply = _ask(agent)
    ray.get(agent.flush.remote())
    assert reply.calls == 2 and len(_records(rig, run_id)) == 2
    _assert_ledger_is_the_bill(rig, rig.emulator, run_id, [reply])


@pytest.mark.parametrize("n", [0, 9, -1])
def test_a_bad_speculation_count_is_one_clear_error_before_any_call(n: int) -> None:
    with pytest.raises(ValidationError, match=f"speculative must be from 1 to 8 attempts, "
                                              f"got {n}"):
        AskRequest(prompt="x", speculative=n)


def test_stream_refuses_to_speculate_or_validate_before_any_call(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    before = rig.emulator.stats()["requests"]
    for request in (AskRequest(prompt="x", speculative=2),
                    AskRequest(prompt="x", output_schema=Answer)):
        with pytest.raises(ConfigError, match="stream cannot speculate or validate"):
            [ray.get(r) for r in agent.stream.remote(request)]
    assert rig.emulator.stats()["requests"] == before


def _json_only_above_haiku(body: dict[str, Any]) -> str:
    """Haiku answers in prose (fails the schema); sonnet and opus answer JSON."""
    if body["model"].startswith("claude-haiku"):
        return "The capital is Oslo."
    return json.dumps({"city": "Oslo"})


def test_an_invalid_reply_escalates_one_tier_and_the_ledger_shows_it(rig: Rig) -> None:
    rig.emulator.reset()
    rig.emulator.set_responder(_json_only_above_haiku)
    try:
        agent, run_id = rig.agent("sonnet", router="auto")
        reply = _ask(agent, "Find the capital of Norway; answer as JSON.",
                     output_schema=Answer)
        ray.get(agent.flush.remote())
    finally:
        rig.emulator.set_responder(None)

    assert Answer.model_validate_json(reply.text).city == "Oslo"
    assert reply.tier == "sonnet" and reply.escalations == 1 and reply.calls == 2
    records = sorted(_records(rig, run_id), key=lambda r: r.started_at)
    assert [(r.tier, r.status) for r in records] == [("haiku", "escalated"), ("sonnet", "ok")]
    assert rig.ledger_totals(run_id).escalations == 1
    _assert_ledger_is_the_bill(rig, rig.emulator, run_id, [reply])


def test_the_router_picks_the_tier_from_the_task(rig: Rig) -> None:
    rig.emulator.reset()
    agent, _ = rig.agent("sonnet", router="auto")
    tiers = [_ask(agent, prompt).tier for prompt in (
        "List the rivers in this sentence: the Rhine and the Po.",
        "Compare the two proposals and evaluate their risks.",
        "Is this contract clause legal under French law?")]
    assert tiers == ["haiku", "sonnet", "opus"]


def test_a_user_router_and_check_replace_the_defaults(rig: Rig) -> None:
    rig.emulator.reset()
    rig.emulator.set_responder(lambda body: "short" if "haiku" in body["model"] else "long " * 5)
    try:
        agent, run_id = rig.agent("haiku", router=lambda request: "haiku")
        reply = _ask(agent, check=lambda text: len(text.split()) >= 5)
        ray.get(agent.flush.remote())
    finally:
        rig.emulator.set_responder(None)
    assert reply.tier == "sonnet" and reply.escalations == 1
    _assert_ledger_is_the_bill(rig, rig.emulator, run_id, [reply])


def test_no_valid_reply_up_to_the_top_tier_is_invalid_reply(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("sonnet")
    with pytest.raises(InvalidReply, match=r"not a valid Answer .*, up to the top tier"):
        _ask(agent, output_schema=Answer)
    ray.get(agent.flush.remote())
    statuses = [r.status for r in _records(rig, run_id)]
    assert sorted(statuses) == ["escalated", "escalated"]
    tokens, _ = bill(rig.emulator.stats())
    assert ledger_tokens(rig.ledger_totals(run_id)) == tokens


def test_a_router_returning_no_tier_is_refused_before_any_call(rig: Rig) -> None:
    agent, _ = rig.agent("haiku", router=lambda request: "gpt")
    before = rig.emulator.stats()["requests"]
    with pytest.raises(ConfigError, match="router returned 'gpt'"):
        _ask(agent)
    assert rig.emulator.stats()["requests"] == before


def test_speculation_and_escalation_together_bill_every_attempt(rig: Rig) -> None:
    rig.emulator.reset()
    rig.emulator.set_responder(_json_only_above_haiku)
    try:
        agent, run_id = rig.agent("haiku")
        reply = _ask(agent, output_schema=Answer, speculative=2,
                     speculative_tiers=("haiku", "haiku"))
        ray.get(agent.flush.remote())
    finally:
        rig.emulator.set_responder(None)
    assert reply.tier == "sonnet" and reply.escalations == 1
    records = _records(rig, run_id)
    assert sum(r.tier == "haiku" for r in records) == 2  # both haiku attempts were judged
    assert all(r.speculative for r in records)
    _assert_ledger_is_the_bill(rig, rig.emulator, run_id, [reply])
