"""D14b: a budget stop in map-reduce pays for nothing it throws away (issue 12).

A small corpus is mapped three times over one chunk store: with a tiny budget, then a mid one,
then one that fits everything. Each capped run must stop on ``BudgetExceeded`` having used its
budget (not stopped at $0 by worst-case reservations), with every chunk the API billed stored
(calls already sent finish; none is cancelled and paid for nothing), spend <= budget (nothing
more was in flight: a call starts only inside a reservation), and the Ledger equal to the
emulator's bill. The last run pays only for the chunks still missing.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.errors import BudgetExceeded
from actors.tiers import load_price_table
from emulator import EmulatorConfig
from tests.drills.bill import billed_requests
from tests.drills.conftest import Drill
from topologies import create_session
from topologies.chunk_store import ChunkStore
from topologies.mapreduce import MapReduceTask

EMULATOR = EmulatorConfig(latency_s=0.05)
MAPPER_WORST_USD = Decimal("0.0003")
"""Above a mapper call's worst case here (about 250 input tokens at the 1-hour cache write
price + 200 output tokens: ~$0.00015, some 7x what one costs), below the reducer's."""
MAPPER = load_price_table().model_for("haiku")
CONFIG = {"chunk_size": 25, "chunk_overlap": 0, "max_parallel_mappers": 8, "mapper_hosts": 1,
          "mapper_max_tokens": 200}
TEXT = "\n\n".join(f"Record {i:03d} notes the bridge and the weir on the river Tarrow."
                   for i in range(40))
TASK = MapReduceTask(question="Which records mention the bridge?", text=TEXT)


def _answer(body: dict[str, Any]) -> str:
    if "mappers" in body["system"][0]["text"]:
        return "The bridge and the weir are named in " + body["messages"][-1]["content"][8:20]
    return "answer"


def _run(drill: Drill, store: Path, budget: str) -> tuple[str, BaseException | None]:
    """One map-reduce session over ``store``; its run id and its error, if any."""
    drill.emulator.reset()

    async def run() -> tuple[str, BaseException | None]:
        session = create_session("mapreduce", runtime=drill.runtime, budget_usd=budget,
                                 config={**CONFIG, "store_dir": store})
        async with session:
            try:
                await session.query(TASK)
            except BudgetExceeded as exc:
                return session.run_id, exc
        return session.run_id, None

    return asyncio.run(run())


def _stored(store: Path) -> int:
    chunks = ChunkStore(store / "chunks.sqlite3")
    try:
        return chunks.count()
    finally:
        chunks.close()


def test_a_budget_stop_keeps_what_it_paid_for_and_a_rerun_pays_only_for_the_rest(
        drill: Drill, tmp_path: Path) -> None:
    drill.emulator.set_responder(_answer)
    stored = 0
    for budget in ("0.0003", "0.0006"):
        run_id, error = _run(drill, tmp_path, budget)
        assert isinstance(error, BudgetExceeded), f"${budget} should stop the run: {error!r}"
        spent = drill.totals(run_id).cost_usd
        # Used its budget (calls waited for reservations to settle): refused only when the
        # spend itself left no room for a mapper call's worst case; and never more.
        assert error.needed_usd < MAPPER_WORST_USD
        assert Decimal(budget) - error.needed_usd < spent <= Decimal(budget)
        billed = billed_requests(drill.emulator.stats(), MAPPER)
        assert _stored(tmp_path) - stored == billed > 0  # every chunk billed is stored
        assert drill.totals(run_id).cancelled == 0
        drill.assert_ledger_is_bill(run_id)
        stored += billed

    chunks = TASK.text.count("Record")  # one record per chunk at this chunk size
    assert stored < chunks
    run_id, error = _run(drill, tmp_path, "1.00")
    assert error is None
    assert billed_requests(drill.emulator.stats(), MAPPER) == chunks - stored
    assert _stored(tmp_path) == chunks
    drill.assert_ledger_is_bill(run_id)


@pytest.fixture(autouse=True)
def _no_responder(drill: Drill) -> Any:
    yield
    drill.emulator.set_responder(None)
