"""Prices checked against sums worked by hand from the published per-million prices.

The Ledger == bill tests compare the Ledger with an emulator that prices from the same
``tiers.toml``, so a wrong price would fail none of them. Here the expected USD is written out
from the prices in docs/messages-api.md §7 (the pricing page): a wrong number in the table,
a cache price derived with the wrong multiplier, or the batch discount applied to the wrong
thing fails these tests.

One known usage for every case: 12,000 uncached input tokens, 3,000 output tokens, 40,000
tokens written to the 5-minute cache, 20,000 to the 1-hour cache, 100,000 read from the cache.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from actors.ledger import Ledger
from actors.messages import Usage
from actors.tiers import load_price_table
from emulator.stats import Stats
from tests.actors.ledger_fixtures import ledger_fixture, make_record  # noqa: F401

TOKENS = {"input_tokens": 12_000, "output_tokens": 3_000, "cache_write_5m": 40_000,
          "cache_write_1h": 20_000, "cache_read": 100_000}
USAGE = Usage(**TOKENS)

# model: (USD per million: input, output, 5-min write, 1-hour write, read) -> the sum, by hand.
HAND_PRICED = {
    # 12k x 3 + 3k x 15 + 40k x 3.75 + 20k x 6 + 100k x 0.30
    # = 0.036 + 0.045 + 0.150 + 0.120 + 0.030
    "claude-sonnet-4-5": Decimal("0.381"),
    # 12k x 1 + 3k x 5 + 40k x 1.25 + 20k x 2 + 100k x 0.10
    # = 0.012 + 0.015 + 0.050 + 0.040 + 0.010
    "claude-haiku-4-5": Decimal("0.127"),
    # 12k x 2 + 3k x 10 + 40k x 2.50 + 20k x 4 + 100k x 0.20
    # = 0.024 + 0.030 + 0.100 + 0.080 + 0.020
    "claude-sonnet-5-5": Decimal("0.254"),
    # 12k x 5 + 3k x 25 + 40k x 6.25 + 20k x 10 + 100k x 0.50
    # = 0.060 + 0.075 + 0.250 + 0.200 + 0.050
    "claude-opus-5": Decimal("0.635"),
    # 12k x 0.10 + 3k x 0.50 + 40k x 0.125 + 20k x 0.20 + 100k x 0.01
    # = 0.0012 + 0.0015 + 0.0050 + 0.0040 + 0.0010
    "claude-haiku-5-5": Decimal("0.0127"),
}
CASES = sorted(HAND_PRICED.items())


@pytest.mark.parametrize(("model", "usd"), CASES)
def test_the_price_table_prices_a_known_usage_as_worked_by_hand(model: str, usd: Decimal) -> None:
    spec = load_price_table().spec(model)
    assert spec.cost_usd(**TOKENS) == usd


@pytest.mark.asyncio
@pytest.mark.parametrize(("model", "usd"), CASES)
async def test_the_ledger_charges_what_was_worked_by_hand(ledger: Ledger, model: str,
                                                          usd: Decimal) -> None:
    tier = load_price_table().tier_of(model)
    await ledger.record([make_record("live", model=model, tier=tier, usage=USAGE),
                         make_record("batched", model=model, tier=tier, usage=USAGE,
                                     source="batch")])
    totals = await ledger.totals("r1")
    # A Message Batch bills all of it at 50 %: one live call plus one batched is 1.5 x.
    assert totals.cost_usd == usd * Decimal("1.5")


@pytest.mark.parametrize(("model", "usd"), CASES)
def test_the_emulators_bill_is_what_was_worked_by_hand(model: str, usd: Decimal) -> None:
    stats = Stats(load_price_table())
    stats.bill(model, batch=False, **TOKENS)
    stats.bill(model, batch=True, **TOKENS)
    assert Decimal(stats.snapshot()["total_cost_usd"]) == usd * Decimal("1.5")
