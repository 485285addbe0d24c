"""The Ledger equals the provider's bill: real SDK, real HTTP, the emulator's ``/_emulator/stats``.

No Agent here: each reply's ``usage`` becomes a record, as the Agent does, so a pricing or
token-mapping mistake in the Ledger shows up without the rest of the runtime. Covers whole and
streamed replies, 5-minute and 1-hour cache writes, cache reads, and a Message Batch (50 %).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anthropic import AsyncAnthropic

from actors.ledger import Ledger
from actors.messages import Usage
from tests.actors.ledger_fixtures import make_record

LONG_SYSTEM = "You are a careful research assistant who cites sources. " * 400


def _system(ttl: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": f"[{ttl}] {LONG_SYSTEM}",
             "cache_control": {"type": "ephemeral", "ttl": ttl}}]


async def _calls(client: AsyncAnthropic) -> list[tuple[str, str, Usage]]:
    """(call id, model, usage) of whole, streamed and cached calls."""
    done = []
    for i, (model, ttl) in enumerate([("claude-haiku-5-5", "5m"), ("claude-haiku-5-5", "5m"),
                                      ("claude-sonnet-5-5", "1h"), ("claude-sonnet-5-5", "1h")]):
        reply = await client.messages.create(
            model=model, max_tokens=64, system=_system(ttl),  # type: ignore[arg-type]
            messages=[{"role": "user", "content": f"Question {i}?"}])
        done.append((f"whole-{i}", model, Usage.from_api(reply.usage)))
    async with client.messages.stream(
            model="claude-opus-5-5", max_tokens=128,
            messages=[{"role": "user", "content": "Stream a short answer."}]) as stream:
        final = await stream.get_final_message()
    done.append(("stream-0", "claude-opus-5-5", Usage.from_api(final.usage)))
    return done


async def _batch(client: AsyncAnthropic) -> list[tuple[str, str, Usage]]:
    """(custom id, model, usage) of the results of one Message Batch."""
    batch = await client.messages.batches.create(requests=[
        {"custom_id": f"batch-{i}", "params": {
            "model": "claude-haiku-5-5", "max_tokens": 32,
            "messages": [{"role": "user", "content": f"Batch question {i}?"}]}}
        for i in range(3)])
    deadline = time.monotonic() + 30
    while (batch := await client.messages.batches.retrieve(batch.id)).processing_status \
            != "ended":
        assert time.monotonic() < deadline, "batch did not end in time"
        await asyncio.sleep(0.05)
    results = await client.messages.batches.results(batch.id)
    return [(item.custom_id, "claude-haiku-5-5", Usage.from_api(item.result.message.usage))
            async for item in results]  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_ledger_totals_equal_the_emulators_bill(emulator: Any, tmp_path: Path) -> None:
    client = AsyncAnthropic(base_url=emulator.base_url, api_key=emulator.api_key, max_retries=0)
    async with client:
        live, batched = await _calls(client), await _batch(client)
    ledger = Ledger(tmp_path)
    tiers = {"claude-haiku-5-5": "haiku", "claude-sonnet-5-5": "sonnet",
             "claude-opus-5-5": "opus"}
    await ledger.record(
        [make_record(call_id, model=model, tier=tiers[model], usage=usage)
         for call_id, model, usage in live]
        + [make_record(call_id, model=model, usage=usage, source="batch")
           for call_id, model, usage in batched])
    totals = await ledger.totals("r1")
    await ledger.close()
    stats = emulator.stats()
    fields = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")
    billed = {f: sum(m[f] for m in stats["billed"].values()) for f in fields}
    assert {f: getattr(totals, f) for f in fields} == billed
    assert totals.cost_usd == Decimal(stats["total_cost_usd"])
    # The calls did exercise every price: cache writes of both TTLs, reads, and a batch.
    assert all(billed[f] > 0 for f in fields)
    assert sum(m["batch_requests"] for m in stats["billed"].values()) == 3
