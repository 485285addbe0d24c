"""The journal: every field round-trips, a kill -9 loses nothing acknowledged, no key leaks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from actors.ledger import Ledger
from actors.ledger_journal import JOURNAL_NAME, read_entries, read_run_ids
from actors.ledger_rollup import Rollup
from actors.messages import CallRecord, Usage
from cluster.settings import Settings
from tests.actors.ledger_crash_driver import BATCH
from tests.actors.ledger_fixtures import make_record

REPO = Path(__file__).resolve().parents[2]
CANARY = "sk-ant-api03-CANARY0123456789abcdefCANARY"


def _every_field_set() -> CallRecord:
    """A record with no field left at its default, so a column the journal drops shows up."""
    return make_record(
        "call-x", 3, incarnation="inc-7", run_id="run-x", role="critic", tier="opus",
        model="claude-opus-5-5", topology="debate", status="error", source="batch",
        speculative=True, streamed=True, http_status=529, error_type="overloaded_error",
        request_id="req_123", started_at=1_800_000_123.25, latency_s=2.5, ttft_s=0.75,
        usage=Usage(input_tokens=1, output_tokens=2, cache_write_5m=3, cache_write_1h=4,
                    cache_read=5),
    )


@pytest.mark.asyncio
async def test_every_record_field_round_trips(tmp_path: Path) -> None:
    record = _every_field_set()
    assert all(getattr(record, name) != field.default
               for name, field in CallRecord.model_fields.items() if name != "kind")
    ledger = Ledger(tmp_path)
    await ledger.record([record])
    await ledger.close()
    [entry] = read_entries(tmp_path / JOURNAL_NAME)
    assert entry.record == record
    # opus-5-5, batch: (4*1 + 20*2 + 5*3 + 8*4 + 0.4*5) / 1e6 / 2
    assert entry.cost_usd == Decimal("0.0000465")


@pytest.mark.asyncio
async def test_a_reopened_journal_has_every_acknowledged_record(tmp_path: Path) -> None:
    first = Ledger(tmp_path)
    await first.record([make_record(f"c{i}", run_id=f"r{i % 3}") for i in range(30)])
    before = await first.runs()
    await first.close()
    second = Ledger(tmp_path)
    assert await second.runs() == before
    assert (await second.stats()).journaled_at_start == 30
    assert (await second.budget("r0")).spent_usd == Decimal("0.00015") * 10
    await second.close()


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """A process killed mid-stream: every batch it reported acknowledged is in the journal."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "tests.actors.ledger_crash_driver", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    acked = -1
    for line in driver.stdout:
        acked = int(line.split()[1])
        if acked >= 30:
            break
    os.kill(driver.pid, signal.SIGKILL)
    rest = driver.stdout.read()  # acknowledgements printed before the kill landed
    driver.wait(timeout=30)
    acked = max([acked, *(int(line.split()[1]) for line in rest.splitlines())])
    assert acked >= 30
    ids = {e.record.call_id for e in read_entries(tmp_path / JOURNAL_NAME)}
    assert {f"b{b}-{i}" for b in range(acked + 1) for i in range(BATCH)} <= ids
    assert len(ids) % BATCH == 0  # a batch commits whole or not at all
    totals = asyncio.run(_totals_after_restart(tmp_path, "r1"))
    assert (totals.attempts, totals.cost_usd) == (len(ids), Decimal("0.00015") * len(ids))


async def _totals_after_restart(data_dir: Path, run_id: str) -> Rollup:
    ledger = Ledger(data_dir)
    try:
        return await ledger.totals(run_id)
    finally:
        await ledger.close()


async def _record_leaky_fields(data_dir: Path) -> None:
    """Even if an Agent bug put the key into a record's text, the journal must redact it."""
    ledger = Ledger(data_dir)
    await ledger.record([make_record(error_type=f"authentication_error {CANARY}",
                                     request_id=CANARY, incarnation=CANARY)])
    await ledger.set_budget("r1", Decimal("1"))
    await ledger.reserve("r1", f"{CANARY}-c2", 0, Decimal("0.1"))  # a user's call id prefix
    await ledger.close()


def test_the_journal_never_holds_an_api_key(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    assert Settings(_env_file=None).anthropic_api_key is not None  # the run holds a key
    asyncio.run(_record_leaky_fields(tmp_path))
    files = list(tmp_path.iterdir())
    assert files
    for path in files:
        assert b"sk-ant-" not in path.read_bytes(), path.name
    [entry] = read_entries(tmp_path / JOURNAL_NAME)
    assert entry.record.request_id == "[redacted-key]"


def test_readers_never_create_a_journal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_run_ids(tmp_path / JOURNAL_NAME)
    with pytest.raises(FileNotFoundError):
        read_entries(tmp_path / JOURNAL_NAME)
    assert list(tmp_path.iterdir()) == []
