"""Message Batches through an Agent: the real SDK's batches API against the emulator."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import ray

from actors.errors import BudgetExceeded, ConfigError
from actors.ledger_journal import JOURNAL_NAME, read_entries
from actors.messages import AskRequest
from emulator import ScriptedError
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens


def _fails_on_poison(body: dict[str, Any]) -> str:
    if "poison" in body["messages"][-1]["content"]:
        raise ScriptedError("invalid_request_error", "scripted refusal")
    return "NOTE: " + body["messages"][-1]["content"]


def test_a_batch_is_billed_at_half_price_and_the_ledger_equals_the_bill(rig: Rig) -> None:
    rig.emulator.reset()
    rig.emulator.set_responder(_fails_on_poison)
    try:
        agent, run_id = rig.agent("haiku")
        items = [(f"c{i}", AskRequest(prompt=f"chunk {i}", max_tokens=50, run_id=run_id))
                 for i in range(5)] + [("bad", AskRequest(prompt="poison", run_id=run_id))]
        batch_id = ray.get(agent.submit_batch.remote(items))
        results = {r.custom_id: r for r in ray.get(agent.collect_batch.remote(batch_id, items))}
    finally:
        rig.emulator.set_responder(None)

    assert batch_id.startswith("msgbatch_") and len(results) == 6
    assert results["bad"].outcome == "errored" and results["bad"].reply is None
    assert results["bad"].error == "invalid_request_error"
    replies = [results[f"c{i}"].reply for i in range(5)]
    assert [r.text for r in replies] == [f"NOTE: chunk {i}" for i in range(5)]
    stats = rig.emulator.stats()
    tokens, usd = bill(stats)
    totals = rig.ledger_totals(run_id)
    assert ledger_tokens(totals) == tokens
    assert totals.cost_usd == usd == sum(r.cost_usd for r in replies)
    full = sum(r.usage.input_tokens for r in replies) * Decimal("0.10") + \
        sum(r.usage.output_tokens for r in replies) * Decimal("0.50")
    assert usd == full / 2 / 1_000_000  # the batch discount, haiku's prices
    records = [e.record for e in read_entries(rig.runtime.settings.data_dir / JOURNAL_NAME,
                                              run_id)]
    assert {r.source for r in records} == {"batch"} and len(records) == 6


def test_a_batch_over_the_runs_budget_is_refused_before_it_is_sent(rig: Rig) -> None:
    agent, run_id = rig.agent("haiku")
    ray.get(rig.runtime.ledger.set_budget.remote(run_id, Decimal("0.000001")))
    before = rig.emulator.stats()["batches"]["created"]
    items = [(f"c{i}", AskRequest(prompt="x" * 400, max_tokens=4_000, run_id=run_id))
             for i in range(3)]
    with pytest.raises(BudgetExceeded):
        ray.get(agent.submit_batch.remote(items))
    assert rig.emulator.stats()["batches"]["created"] == before


def test_a_request_that_speculates_cannot_be_batched(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    with pytest.raises(ConfigError, match="batch requests cannot speculate"):
        ray.get(agent.submit_batch.remote([("a", AskRequest(prompt="x", speculative=2))]))


def test_expired_requests_come_back_without_a_reply_and_cost_nothing(rig: Rig) -> None:
    from emulator import run_emulator

    with run_emulator(batch_delay_s=5.0, batch_expire_s=0.2) as emu:
        agent, run_id = rig.agent("haiku", emulator=emu)
        items = [(f"c{i}", AskRequest(prompt=f"chunk {i}", run_id=run_id)) for i in range(3)]
        batch_id = ray.get(agent.submit_batch.remote(items))
        results = ray.get(agent.collect_batch.remote(batch_id, items))
        assert {(r.outcome, r.reply) for r in results} == {("expired", None)}
        assert Decimal(emu.stats()["total_cost_usd"]) == 0
    assert rig.ledger_totals(run_id).cost_usd == 0
