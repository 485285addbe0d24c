"""Map-reduce with ``batch=True``: the map phase through Message Batches, end to end.

Real Ray, the real SDK's batches API, the emulator: results reach the reducer, an errored
request is sent again as a normal call, the Ledger equals the emulator's bill, and a resumed
run collects a stored batch instead of paying for its chunks again.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from anthropic import Anthropic

from actors.ledger_journal import JOURNAL_NAME, read_entries
from emulator import ScriptedError
from tests.topologies.rig import TopologyRig
from topologies import create_session
from topologies.chunk_store import ChunkStore, chunk_key
from topologies.mapreduce import MapReduce, MapReduceResult, MapReduceTask

TEXT = "\n\n".join(f"Record {i:02d} says the weir on the Tarrow held." for i in range(12))
TASK = MapReduceTask(question="Did the weir hold?", text=TEXT)


class Answers:
    """Mappers echo their record; record 05 fails once (in its batch); the reducer counts."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self, body: dict[str, Any]) -> str:
        system, user = body["system"][0]["text"], body["messages"][-1]["content"]
        if system.startswith("You write the final answer"):
            return f"{user.count('### ')} notes"
        if "Record 05" in user and not self.failed:
            self.failed = True
            raise ScriptedError("api_error", "scripted failure inside the batch")
        return "held: " + user.split("Record ")[1][:2]


def _run(rig: TopologyRig, config: dict[str, Any]) -> tuple[MapReduceResult, list[Any]]:
    async def run() -> MapReduceResult:
        async with create_session("mapreduce", runtime=rig.runtime, config=config) as s:
            return await s.query(TASK)

    result = asyncio.run(run())
    records = [e.record for e in read_entries(rig.runtime.settings.data_dir / JOURNAL_NAME,
                                              result.run_id)]
    return result, records


@pytest.mark.slow
def test_the_map_phase_goes_through_batches_at_half_price(rig: TopologyRig,
                                                          tmp_path: Path) -> None:
    rig.emulator.reset()
    rig.emulator.set_responder(Answers())
    try:
        result, records = _run(rig, {"chunk_size": 20, "chunk_overlap": 0, "mapper_hosts": 1,
                                     "store_dir": tmp_path, "batch": True, "batch_size": 5})
    finally:
        rig.emulator.set_responder(None)

    chunks = result.chunks
    assert chunks > 5 and result.output == f"{chunks} notes"
    assert (result.batches, result.chunks_batched, result.batch_retries) == \
        (-(-chunks // 5), chunks - 1, 1)
    mapper = [r for r in records if r.role == "mapper"]
    assert [(r.source, r.status) for r in mapper].count(("batch", "ok")) == chunks - 1
    assert [(r.source, r.status) for r in mapper if r.source == "api"] == [("api", "ok")]
    assert rig.emulator.stats()["batches"]["errored"] == 1
    assert result.cost_usd == Decimal(rig.emulator.stats()["total_cost_usd"])
    assert ChunkStore(tmp_path / "chunks.sqlite3").pending_batches() == {}


@pytest.mark.slow
def test_a_resumed_run_collects_its_stored_batch_instead_of_sending_it_again(
        rig: TopologyRig, tmp_path: Path) -> None:
    # A run that died after creating its batch left the batch id in the chunk store.
    arch = MapReduce({"chunk_size": 20, "chunk_overlap": 0, "batch": True})
    plan = arch.check_input(TASK)
    _, model = arch.model_for("mapper")
    system = arch.prompt("mapper", question=plan.question)
    rig.emulator.reset()
    rig.emulator.set_responder(lambda body: "held")
    pairs, requests = [], []
    for chunk in plan.chunks():
        ckey = chunk_key(model=model, system=system, prompt=chunk.prompt(), max_tokens=512)
        pairs.append((ckey[:48], ckey))
        requests.append({"custom_id": ckey[:48], "params": {
            "model": model, "max_tokens": 512, "system": system,
            "messages": [{"role": "user", "content": chunk.prompt()}]}})
    key = rig.runtime.backend.api_key.get_secret_value()  # batches are visible to their key
    with Anthropic(base_url=rig.emulator.base_url, api_key=key) as client:
        batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    store = ChunkStore(tmp_path / "chunks.sqlite3")
    store.add_batch(batch.id, pairs)
    store.close()
    try:
        result, records = _run(rig, {"chunk_size": 20, "chunk_overlap": 0, "mapper_hosts": 1,
                                     "store_dir": tmp_path, "batch": True})
    finally:
        rig.emulator.set_responder(None)

    assert (result.batches, result.chunks_batched) == (0, len(pairs))
    assert rig.emulator.stats()["batches"]["created"] == 1  # collected, not sent again
    assert sum(r.source == "batch" for r in records) == len(pairs)
    assert ChunkStore(tmp_path / "chunks.sqlite3").pending_batches() == {}
