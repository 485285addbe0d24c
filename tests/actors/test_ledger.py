"""The Ledger's bookkeeping, called directly (no Ray): prices, duplicates, roll-ups."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from actors.errors import UsageError
from actors.ledger import Ledger
from actors.ledger_rollup import percentile
from actors.messages import Usage
from tests.actors.ledger_fixtures import T0, ledger_fixture, make_record  # noqa: F401


@pytest.mark.asyncio
async def test_cost_is_exact_for_every_token_kind(ledger: Ledger) -> None:
    usage = Usage(input_tokens=1_234, output_tokens=567, cache_write_5m=1_000,
                  cache_write_1h=2_000, cache_read=3_000)
    await ledger.record([make_record(usage=usage)])
    totals = await ledger.totals("r1")
    # haiku-5-5 per MTok: input 0.10, output 0.50, 5m write 0.125, 1h write 0.20, read 0.01
    assert totals.cost_usd == Decimal("0.0009619")
    assert (totals.input_tokens, totals.output_tokens, totals.cache_write_5m,
            totals.cache_write_1h, totals.cache_read) == (1_234, 567, 1_000, 2_000, 3_000)


@pytest.mark.asyncio
async def test_batch_attempts_get_the_batch_discount(ledger: Ledger) -> None:
    usage = Usage(input_tokens=1_000, output_tokens=1_000)
    await ledger.record([make_record("c1", role="live", tier="sonnet", model="claude-sonnet-5-5",
                                     usage=usage),
                         make_record("c2", role="batch", tier="sonnet", model="claude-sonnet-5-5",
                                     usage=usage, source="batch")])
    by_agent = {r.key: r.cost_usd for r in await ledger.rollup("r1", by="agent")}
    # sonnet-5-5: 2.00 in / 10.00 out per MTok; Message Batches bill half
    assert by_agent == {"r1/research/live": Decimal("0.012"),
                        "r1/research/batch": Decimal("0.006")}


@pytest.mark.asyncio
async def test_response_cache_hits_cost_nothing_and_add_no_tokens(ledger: Ledger) -> None:
    await ledger.record([make_record("c1"),
                         make_record("c2", status="cache_hit", source="cache", latency_s=0.0)])
    totals = await ledger.totals("r1")
    assert (totals.calls, totals.cache_hits, totals.input_tokens) == (2, 1, 1_000)
    assert totals.cost_usd == Decimal("0.00015")
    assert totals.latency_p50 == 1.0  # the hit's 0 s is not an API latency


@pytest.mark.asyncio
async def test_duplicates_are_acknowledged_and_counted_once(ledger: Ledger) -> None:
    record = make_record()
    assert await ledger.record([record, record]) == 1
    assert await ledger.record([record]) == 0
    zombie_replay = make_record(incarnation="old-process", request_id="req_other")
    assert await ledger.record([zombie_replay]) == 0
    totals = await ledger.totals("r1")
    assert (totals.attempts, totals.input_tokens, totals.cost_usd) == (
        1, 1_000, Decimal("0.00015"))
    stats = await ledger.stats()
    assert (stats.records, stats.duplicates) == (4, 3)
    assert (await ledger.budget("r1")).spent_usd == Decimal("0.00015")


@pytest.mark.asyncio
async def test_a_resent_record_whose_call_id_holds_a_key_counts_once(ledger: Ledger) -> None:
    """The journal keeps such a call id redacted; the duplicate check must look for it as
    kept. Before: the re-send was counted again in the run's spend (not in the journal), so
    its budget saw twice the cost until the Ledger restarted."""
    record = make_record("sk-ant-x")
    assert await ledger.record([record]) == 1
    assert await ledger.record([record]) == 0
    assert (await ledger.budget("r1")).spent_usd == Decimal("0.00015")
    assert (await ledger.stats()).duplicates == 1


@pytest.mark.asyncio
async def test_concurrent_duplicates_count_once(ledger: Ledger) -> None:
    records = [make_record(f"c{i}") for i in range(50)]
    await asyncio.gather(*(ledger.record(records) for _ in range(20)))
    totals = await ledger.totals("r1")
    assert (totals.attempts, totals.cost_usd) == (50, Decimal("0.00015") * 50)


@pytest.mark.asyncio
async def test_rollup_counts_calls_attempts_errors_and_retries(ledger: Ledger) -> None:
    await ledger.record([
        make_record("a", 0, status="error", http_status=429, error_type="rate_limit_error",
                    usage=Usage()),
        make_record("a", 1, status="error", http_status=529, error_type="overloaded_error",
                    usage=Usage()),
        make_record("a", 2),
        make_record("b", 0, role="worker-0", tier="sonnet", model="claude-sonnet-5-5"),
        make_record("c", 0, role="worker-1", status="cancelled", speculative=True),
    ])
    [run] = await ledger.runs()
    assert (run.key, run.calls, run.attempts, run.errors, run.rate_limited, run.retries,
            run.cancelled) == ("r1", 3, 5, 2, 1, 2, 1)
    by_agent = {r.key: (r.calls, r.attempts) for r in await ledger.rollup("r1", by="agent")}
    assert by_agent == {"r1/research/lead": (1, 3), "r1/research/worker-0": (1, 1),
                        "r1/research/worker-1": (1, 1)}
    by_tier = {r.key: r.cost_usd for r in await ledger.rollup("r1", by="tier")}
    assert by_tier == {"haiku": Decimal("0.00030"), "sonnet": Decimal("0.003")}
    [topology] = await ledger.rollup(None, by="topology")
    assert (topology.key, topology.attempts) == ("research", 5)


@pytest.mark.asyncio
async def test_rollups_keep_runs_apart(ledger: Ledger) -> None:
    await ledger.record([make_record("x", run_id="r1"), make_record("y", run_id="r2",
                                                                    started_at=T0 + 5)])
    assert [r.key for r in await ledger.runs()] == ["r1", "r2"]
    assert [r.key for r in await ledger.rollup("r2", by="agent")] == ["r2/research/lead"]
    empty = await ledger.totals("never-ran")
    assert (empty.key, empty.attempts, empty.cost_usd, empty.latency_p50) == (
        "never-ran", 0, Decimal(0), None)


@pytest.mark.asyncio
async def test_latency_percentiles_are_nearest_rank(ledger: Ledger) -> None:
    await ledger.record([make_record(f"c{i}", latency_s=float(i), ttft_s=i / 10)
                         for i in range(100, 0, -1)])
    totals = await ledger.totals("r1")
    assert (totals.latency_p50, totals.latency_p95, totals.latency_p99) == (50.0, 95.0, 99.0)
    assert totals.ttft_p50 == 5.0


def test_percentile_of_small_samples() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 51) == 2.0


@pytest.mark.asyncio
async def test_unknown_rollup_key_names_the_choices(ledger: Ledger) -> None:
    with pytest.raises(UsageError, match="choose one of run, agent, tier, topology, model"):
        await ledger.rollup("r1", by="colour")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_unknown_model_is_billed_at_its_tiers_price(ledger: Ledger) -> None:
    await ledger.record([make_record(model="claude-haiku-next")])
    assert (await ledger.totals("r1")).cost_usd == Decimal("0.00015")
