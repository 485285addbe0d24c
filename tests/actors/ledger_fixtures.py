"""Records and Ledgers for the Ledger tests: one place that builds them."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest_asyncio

from actors.ledger import Ledger
from actors.ledger_journal import JOURNAL_NAME
from actors.messages import CallRecord, Usage

T0 = 1_800_000_000.0
"""A fixed start time, so records sort the same on every run."""


def make_record(call_id: str = "c1", attempt: int = 0, *, run_id: str = "r1",
                role: str = "lead", tier: str = "haiku", model: str = "claude-haiku-5-5",
                topology: str = "research", started_at: float = T0, **fields: Any) -> CallRecord:
    """A successful, unstreamed 1-second attempt unless ``fields`` say otherwise."""
    values: dict[str, Any] = dict(
        call_id=call_id, attempt=attempt, run_id=run_id, topology=topology,
        agent=f"{run_id}/{topology}/{role}", role=role, tier=tier, model=model, status="ok",
        usage=Usage(input_tokens=1_000, output_tokens=100), http_status=200,
        request_id=f"req_{call_id}_{attempt}", started_at=started_at, latency_s=1.0,
    )
    values.update(fields)
    return CallRecord(**values)


@pytest_asyncio.fixture(name="ledger")
async def ledger_fixture(tmp_path: Path) -> AsyncIterator[Ledger]:
    """A Ledger called directly (no Ray) on a fresh journal; closed afterwards."""
    instance = Ledger(tmp_path)
    yield instance
    await instance.close()


def truncated_journal(directory: Path, records: int = 5_000) -> Path:
    """A real journal of ``records`` attempts cut to half its length (a full disk, a bad copy).

    Call it outside an event loop (it runs its own).
    """
    async def fill() -> None:
        ledger = Ledger(directory)
        await ledger.record([make_record(f"c{i}", started_at=T0 + i) for i in range(records)])
        await ledger.close()

    asyncio.run(fill())
    path = directory / JOURNAL_NAME
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every row into the main file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
