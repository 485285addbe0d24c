"""Budgets, called directly (no Ray): reserve the worst case, never overspend, expire orphans.

The race under test is LiteLLM's (BerriAI/litellm#34732, #40095): concurrent callers each
check the budget, all pass, all spend. Here 100 callers reserve at once, many times over.
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from pathlib import Path

import pytest

from actors.errors import BudgetExceeded, UsageError
from actors.ledger import Ledger
from actors.messages import Usage
from actors.tiers import load_price_table
from tests.actors.ledger_fixtures import T0, ledger_fixture, make_record  # noqa: F401
from tests.fake_clock import FakeClock

HAIKU = load_price_table().spec("claude-haiku-5-5")
MAX_TOKENS = 2_000
INPUT = 10_000
WORST = HAIKU.cost_usd(input_tokens=INPUT, output_tokens=MAX_TOKENS)  # 0.002


async def _agent(ledger: Ledger, name: str, rng: random.Random, log: list[Decimal]) -> int:
    """Call until the budget refuses: reserve the worst case, then record the real cost."""
    calls = 0
    while True:
        call_id = f"{name}-{calls}"
        try:
            await ledger.reserve("r1", call_id, 0, WORST)
        except BudgetExceeded:
            return calls
        await asyncio.sleep(0)  # the "HTTP call": let every other agent run meanwhile
        usage = Usage(input_tokens=INPUT, output_tokens=rng.randint(1, MAX_TOKENS))
        await ledger.record([make_record(call_id, role=name, usage=usage)])
        log.append((await ledger.budget("r1")).spent_usd)
        calls += 1


@pytest.mark.asyncio
async def test_a_hundred_concurrent_agents_never_pass_the_cap(ledger: Ledger) -> None:
    cap = Decimal("0.50")
    await ledger.set_budget("r1", cap)
    rng, spent_log = random.Random(7), []
    calls = await asyncio.gather(*(_agent(ledger, f"a{i}", rng, spent_log)
                                   for i in range(100)))
    budget = await ledger.budget("r1")
    totals = await ledger.totals("r1")
    assert max(spent_log) <= cap
    assert budget.spent_usd == totals.cost_usd <= cap
    assert (budget.reserved_usd, budget.reservations) == (Decimal(0), 0)
    assert sum(calls) == totals.calls
    # Every agent stopped because the worst case no longer fitted, not for another reason.
    assert cap - budget.spent_usd < WORST
    assert (await ledger.stats()).budget_refusals == 100


@pytest.mark.asyncio
async def test_refusal_reserves_nothing_and_says_why(ledger: Ledger) -> None:
    await ledger.set_budget("r1", Decimal("0.005"))
    await ledger.reserve("r1", "c1", 0, WORST)
    await ledger.reserve("r1", "c2", 0, WORST)
    with pytest.raises(BudgetExceeded) as refused:
        await ledger.reserve("r1", "c3", 0, WORST)
    error = refused.value
    assert (error.run_id, error.cap_usd, error.committed_usd, error.needed_usd) == (
        "r1", Decimal("0.005"), Decimal("0.004"), WORST)
    assert "raise the budget (--budget, budget_usd=) or lower max_tokens" in str(error)
    budget = await ledger.budget("r1")
    assert (budget.reserved_usd, budget.reservations) == (Decimal("0.004"), 2)


@pytest.mark.asyncio
async def test_a_record_swaps_its_reservation_for_the_real_cost(ledger: Ledger) -> None:
    await ledger.set_budget("r1", Decimal("1"))
    await ledger.reserve("r1", "c1", 0, WORST)
    await ledger.reserve("r1", "c1", 0, WORST)  # Ray replaying the call: still one hold
    assert (await ledger.budget("r1")).reserved_usd == WORST
    await ledger.record([make_record("c1")])
    budget = await ledger.budget("r1")
    assert (budget.spent_usd, budget.reserved_usd) == (Decimal("0.00015"), Decimal(0))


@pytest.mark.asyncio
async def test_release_frees_an_attempt_that_was_never_sent(ledger: Ledger) -> None:
    await ledger.set_budget("r1", Decimal("0.002"))
    await ledger.reserve("r1", "c1", 0, WORST)
    await ledger.release("r1", "c1", 0)
    await ledger.reserve("r1", "c2", 0, WORST)
    assert (await ledger.budget("r1")).reservations == 1


@pytest.mark.asyncio
async def test_reservations_of_a_dead_caller_expire(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    ledger = Ledger(tmp_path, reservation_ttl_s=600, clock=clock)
    await ledger.set_budget("r1", Decimal("0.003"))
    await ledger.reserve("r1", "orphan", 0, WORST)  # its caller dies here
    with pytest.raises(BudgetExceeded):
        await ledger.reserve("r1", "c2", 0, WORST)
    clock.advance(599)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve("r1", "c2", 0, WORST)
    clock.advance(1)
    await ledger.reserve("r1", "c2", 0, WORST)
    assert (await ledger.budget("r1")).reservations == 1
    await ledger.close()


@pytest.mark.asyncio
async def test_a_long_attempt_can_hold_longer_than_the_ttl(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    ledger = Ledger(tmp_path, reservation_ttl_s=600, clock=clock)
    await ledger.set_budget("r1", Decimal("0.003"))
    await ledger.reserve("r1", "long-stream", 0, WORST, ttl_s=3_600)
    clock.advance(3_599)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve("r1", "c2", 0, WORST)
    await ledger.close()


@pytest.mark.asyncio
async def test_budgets_and_reservations_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(start=T0)
    first = Ledger(tmp_path, clock=clock)
    await first.set_budget("r1", Decimal("0.0045"))
    await first.set_budget("r2", Decimal("9"))
    await first.set_budget("r2", None)
    await first.reserve("r1", "c1", 0, WORST)
    await first.record([make_record("c0")])
    await first.close()
    second = Ledger(tmp_path, clock=clock)
    budget = await second.budget("r1")
    assert (budget.cap_usd, budget.spent_usd, budget.reserved_usd) == (
        Decimal("0.0045"), Decimal("0.00015"), WORST)
    assert (await second.budget("r2")).cap_usd is None
    with pytest.raises(BudgetExceeded):  # 0.00015 + 0.002 + 0.002 + 0.002 > 0.0045
        await asyncio.gather(*(second.reserve("r1", f"n{i}", 0, WORST) for i in range(2)))
    await second.close()
    clock.advance(601)  # restarted after the callers died: their reservations are dropped
    third = Ledger(tmp_path, clock=clock)
    budget = await third.budget("r1")
    assert (budget.reserved_usd, budget.reservations) == (Decimal(0), 0)
    await third.close()


@pytest.mark.asyncio
async def test_a_run_without_a_cap_holds_nothing(ledger: Ledger) -> None:
    await ledger.reserve("free", "c1", 0, Decimal("1000"))
    budget = await ledger.budget("free")
    assert (budget.cap_usd, budget.reservations) == (None, 0)


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [Decimal("-1"), "lots", Decimal("NaN")])
async def test_amounts_must_be_finite_and_not_negative(ledger: Ledger, bad: object) -> None:
    with pytest.raises(UsageError, match="cap_usd"):
        await ledger.set_budget("r1", bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="worst_case_usd"):
        await ledger.reserve("r1", "c1", 0, bad)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_near_the_cap_a_reservation_waits_for_others_to_settle(ledger: Ledger) -> None:
    # Two worst cases fill a cap their real costs (0.00015 each) leave mostly free: a third
    # call waits for a record instead of stopping the run with money left (issue 12, D14b).
    await ledger.set_budget("r1", Decimal("0.005"))
    for call in ("c1", "c2"):
        await ledger.reserve("r1", call, 0, WORST)
    third = asyncio.create_task(ledger.reserve("r1", "c3", 0, WORST, wait_s=30))
    fourth = asyncio.create_task(ledger.reserve("r1", "c4", 0, WORST, wait_s=30))
    await asyncio.sleep(0.05)
    assert not third.done() and not fourth.done()
    await ledger.release("r1", "c4", 0)  # its caller gave up: withdrawn, never granted
    with pytest.raises(BudgetExceeded):
        await fourth
    await ledger.record([make_record("c1")])
    await asyncio.wait_for(third, 5)
    budget = await ledger.budget("r1")
    assert (budget.spent_usd, budget.reserved_usd, budget.reservations) == (
        Decimal("0.00015"), 2 * WORST, 2)
    # The spend alone leaves no room for another worst case: refused at once, no wait.
    await ledger.record([make_record(f"s{i}", usage=Usage(input_tokens=10_000,
                                                          output_tokens=1_000))
                         for i in range(3)])
    with pytest.raises(BudgetExceeded):
        await asyncio.wait_for(ledger.reserve("r1", "c5", 0, WORST, wait_s=30), 1)
