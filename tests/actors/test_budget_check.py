"""The Agent's budget check: a steady caller never waits for the Ledger, and no call acts on
an answer older than ``recheck_s`` (actors/budget_check.py)."""

from __future__ import annotations

import asyncio

import pytest

from actors.budget_check import REFRESH_AFTER_S, BudgetCheck
from tests.fake_clock import FakeClock


class _Ledger:
    """Answers whether a run has a cap; a test sets the cap, or makes the Ledger fail."""

    def __init__(self) -> None:
        self.capped = False
        self.failing = False
        self.asked = 0
        self.gate: asyncio.Event | None = None

    async def ask(self, run_id: str) -> bool:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise ConnectionError("the Ledger is gone")
        return self.capped


async def _asked_once() -> tuple[FakeClock, _Ledger, BudgetCheck]:
    """A check that has its first answer (uncapped), asked at time 0."""
    clock, ledger = FakeClock(), _Ledger()
    check = BudgetCheck(ledger.ask, recheck_s=2.0, clock=clock)
    assert await check.capped("r1") is False          # the first call asks, and waits
    return clock, ledger, check


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_steady_caller_sees_a_new_cap_without_waiting_for_the_ledger() -> None:
    clock, ledger, check = await _asked_once()
    ledger.capped = True                               # a cap set while the run goes on
    ledger.gate = asyncio.Event()                      # from now on the Ledger is slow
    clock.advance(1.5)
    assert await check.capped("r1") is False           # aging: answered from what it knows
    clock.advance(REFRESH_AFTER_S)                     # ... and refreshed behind the call
    await _settle()
    assert ledger.asked == 2
    ledger.gate.set()
    await _settle()
    clock.advance(1.0)                                 # 2.5 s after the first answer
    assert await check.capped("r1") is True            # the refreshed answer, no wait
    assert ledger.asked == 2


@pytest.mark.asyncio
async def test_an_answer_older_than_recheck_s_is_waited_for() -> None:
    clock, ledger, check = await _asked_once()
    ledger.capped = True
    clock.advance(2.0)                                 # a caller slower than the recheck
    assert await check.capped("r1") is True
    assert ledger.asked == 2


@pytest.mark.asyncio
async def test_a_failed_refresh_keeps_the_old_answer_until_it_must_be_asked_again() -> None:
    clock, ledger, check = await _asked_once()
    ledger.failing = True
    clock.advance(1.2)
    assert await check.capped("r1") is False
    clock.advance(REFRESH_AFTER_S)
    await _settle()
    clock.advance(0.2)
    assert await check.capped("r1") is False           # the refresh failed: the old answer
    clock.advance(1.0)
    with pytest.raises(ConnectionError):               # too old now: the caller sees why
        await check.capped("r1")


@pytest.mark.asyncio
async def test_one_refresh_at_a_time_per_run() -> None:
    clock, ledger, check = await _asked_once()
    clock.advance(1.1)
    for _ in range(5):
        await check.capped("r1")
    clock.advance(REFRESH_AFTER_S)
    await _settle()
    assert ledger.asked == 2


@pytest.mark.asyncio
async def test_calls_that_find_no_answer_together_share_one_question() -> None:
    # A busy host's first calls of a run: 25 at once, one Ledger round trip between them.
    clock, ledger = FakeClock(), _Ledger()
    check = BudgetCheck(ledger.ask, recheck_s=2.0, clock=clock)
    ledger.gate = asyncio.Event()
    calls = [asyncio.ensure_future(check.capped("r1")) for _ in range(25)]
    await _settle()
    ledger.gate.set()
    assert await asyncio.gather(*calls) == [False] * 25
    assert ledger.asked == 1
