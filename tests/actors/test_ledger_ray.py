"""The Ledger on real Ray: one singleton, batched client, restarts that lose and double nothing."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import ray

from actors.errors import BudgetExceeded
from actors.ledger import LEDGER_NAME, get_ledger
from actors.ledger_client import LedgerClient
from actors.messages import Usage
from actors.record_journal import read_journal
from tests.actors.ledger_fixtures import make_record
from tests.polling import wait_for_async

COST = Decimal("0.00015")  # one make_record() on haiku-5-5


@pytest.fixture
def ledger_ns(ray_session: None) -> Iterator[str]:
    """A namespace of its own per test (other modules own the default ``raytroupe`` one)."""
    namespace = f"ledger-{uuid.uuid4().hex[:8]}"
    yield namespace
    try:
        ray.kill(ray.get_actor(LEDGER_NAME, namespace=namespace), no_restart=True)
    except ValueError:
        pass


@ray.remote(num_cpus=0)
def _ledger_id_from_a_task(data_dir: str, namespace: str) -> str:
    return get_ledger(Path(data_dir), namespace=namespace)._actor_id.hex()


def test_get_ledger_is_one_singleton(ledger_ns: str, tmp_path: Path) -> None:
    first = get_ledger(tmp_path, namespace=ledger_ns)
    again = get_ledger(tmp_path / "elsewhere", namespace=ledger_ns)
    from_task = ray.get(_ledger_id_from_a_task.remote(str(tmp_path), ledger_ns))
    assert first._actor_id == again._actor_id
    assert from_task == first._actor_id.hex()
    ray.get(first.set_budget.remote("r1", Decimal(1)))
    assert (tmp_path / "ledger.sqlite").is_file()
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.asyncio
async def test_client_batches_and_flush_waits_for_acks(ledger_ns: str, tmp_path: Path) -> None:
    ledger = get_ledger(tmp_path, namespace=ledger_ns)
    client = LedgerClient(ledger, batch_size=50, linger_s=0.5)
    for i in range(120):
        client.record(make_record(f"c{i}"))
    await client.flush()
    totals = await ledger.totals.remote("r1")
    assert (totals.attempts, totals.cost_usd) == (120, COST * 120)
    stats = await ledger.stats.remote()
    assert stats.record_batches == client.sent_batches <= 3
    # A lone record goes out after its linger, with no flush.
    client.record(make_record("late"))

    async def _late_arrived() -> bool:
        return (await ledger.totals.remote("r1")).attempts == 121

    await wait_for_async(_late_arrived, "the late record")
    await client.aclose()


@pytest.mark.asyncio
async def test_a_busy_process_sends_its_records_about_twice_a_second(ledger_ns: str,
                                                                     tmp_path: Path) -> None:
    """A batch costs the Ledger an RPC (~1 ms of CPU) whatever its size: a host answering
    400 calls a second sends a batch per linger (0.5 s), not one per 50 records."""
    ledger = get_ledger(tmp_path, namespace=ledger_ns)
    client = LedgerClient(ledger, journal_dir=None)
    for wave in range(10):  # a second of answers, in waves of 40
        for i in range(40):
            client.record(make_record(f"c{wave}-{i}"))
        await asyncio.sleep(0.1)

    async def _all_arrived() -> bool:
        return (await ledger.totals.remote("r1")).attempts == 400

    await wait_for_async(_all_arrived, "the records, with no flush")
    assert (await ledger.stats.remote()).record_batches <= 3  # before: 5 (one per 50)
    await client.aclose()


@pytest.mark.asyncio
async def test_a_busy_processs_journal_holds_only_what_is_not_acknowledged(
        ledger_ns: str, tmp_path: Path) -> None:
    """Records keep arriving while every batch is on its way (a host answering steadily):
    the local journal, in memory on a real node, must shrink as batches are acknowledged,
    not keep every record until the host has a quiet moment."""
    ledger = get_ledger(tmp_path / "ledger", namespace=ledger_ns)
    await ledger.totals.remote("r1")  # up: its start-up would hold the first batch
    client = LedgerClient(ledger, linger_s=0.05, journal_dir=tmp_path / "journal")
    for i in range(600):  # about a second of answers, one every ~1.5 ms: no quiet moment
        client.record(make_record(f"c{i}"))
        await asyncio.sleep(0.001)
    # Read with no await in between: the sender runs on this loop, so nothing moves meanwhile.
    kept = sum(len(read_journal(p)) for p in (tmp_path / "journal").glob("*.jsonl"))
    assert client.sent_batches >= 2
    assert kept == client.unacknowledged < 600, kept  # before: all 600 until a quiet moment
    await client.flush()
    assert sum(len(read_journal(p)) for p in (tmp_path / "journal").glob("*.jsonl")) == 0
    assert (await ledger.totals.remote("r1")).attempts == 600
    await client.aclose()


@pytest.mark.asyncio
async def test_a_flush_waits_for_the_records_before_it_not_for_a_quiet_moment(
        ledger_ns: str, tmp_path: Path) -> None:
    """One run ends on a host that keeps answering another: its flush returns once its own
    records are acknowledged, though the host never falls quiet."""
    ledger = get_ledger(tmp_path, namespace=ledger_ns)
    client = LedgerClient(ledger, linger_s=0.05, journal_dir=None)
    stop = asyncio.Event()

    async def other_run() -> None:
        for i in range(1_000_000):
            if stop.is_set():
                return
            client.record(make_record(f"other-{i}", run_id="other"))
            await asyncio.sleep(0)  # a record queued on every turn: never a quiet moment

    busy = asyncio.create_task(other_run())
    for i in range(50):
        client.record(make_record(f"mine-{i}", run_id="mine"))
    await asyncio.sleep(0.2)
    try:
        async with asyncio.timeout(10):
            await client.flush()  # before: waited for the other run to end
        assert not busy.done()
        assert (await ledger.totals.remote("mine")).attempts == 50
    finally:
        stop.set()
        await busy
    await client.aclose()


@pytest.mark.asyncio
async def test_budget_refusal_reaches_the_caller_as_itself(ledger_ns: str,
                                                           tmp_path: Path) -> None:
    ledger = get_ledger(tmp_path, namespace=ledger_ns)
    client = LedgerClient(ledger)
    client.reserve_wait_s = 0.2  # c1 never settles: waiting for it could only time out
    await ledger.set_budget.remote("r1", Decimal("0.01"))
    await client.reserve("r1", "c1", 0, Decimal("0.006"))
    with pytest.raises(BudgetExceeded) as refused:
        await client.reserve("r1", "c2", 0, Decimal("0.006"))
    assert type(refused.value) is BudgetExceeded
    assert refused.value.committed_usd == Decimal("0.006")


@pytest.mark.asyncio
async def test_a_killed_ledger_restarts_with_exact_totals(ledger_ns: str,
                                                          tmp_path: Path) -> None:
    """Kill the Ledger while records stream in; replay some: totals stay exact."""
    ledger = get_ledger(tmp_path, namespace=ledger_ns)
    client = LedgerClient(ledger, batch_size=10, linger_s=0.01, max_batch=10)
    records = [make_record(f"c{i}", attempt=i % 3) for i in range(400)]
    for record in records[:200]:
        client.record(record)
        await asyncio.sleep(0)

    async def _some_acked() -> bool:
        return client.sent_batches >= 3

    await wait_for_async(_some_acked, "some records acknowledged")
    ray.kill(ledger, no_restart=False)
    for record in records[200:] + records[:50]:  # the tail, then replays of acked records
        client.record(record)
        await asyncio.sleep(0)
    await client.flush()
    totals = await ledger.totals.remote("r1")
    assert (totals.attempts, totals.calls, totals.cost_usd) == (400, 400, COST * 400)
    assert totals.retries == sum(1 for r in records if r.attempt > 0)
    stats = await ledger.stats.remote()
    assert stats.journaled_at_start > 0  # this is a restarted process that reloaded
    assert (await ledger.budget.remote("r1")).spent_usd == COST * 400


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_metrics_reach_the_metrics_endpoint(ledger_ns: str, tmp_path: Path) -> None:
    """Ray reports custom metrics every 10 s by default, hence slow. A batch is counted per
    agent, each new attempt once (the Ledger sums a batch before it increments)."""
    ledger = get_ledger(tmp_path, namespace=ledger_ns)
    lead = make_record("c1", run_id=ledger_ns, role="lead", ttft_s=0.2)
    await ledger.record.remote([
        lead, make_record("c2", run_id=ledger_ns, role="lead"), lead,  # a duplicate
        make_record("c3", run_id=ledger_ns, role="worker"),
        make_record("c4", run_id=ledger_ns, role="worker", http_status=429,
                    status="error", usage=Usage())])
    await ledger.record.remote([lead])  # a replay in a later batch counts nothing either
    port = ray.nodes()[0]["MetricsExportPort"]

    def _value(body: str, name: str, *parts: str) -> float | None:
        for line in body.splitlines():
            if line.startswith(f"{name}{{") and all(p in line for p in parts):
                return float(line.rpartition(" ")[2])
        return None

    async def _exported() -> bool:
        body = await asyncio.to_thread(_scrape, port)
        lead_agent, worker = (f'agent="{ledger_ns}/research/{r}"' for r in ("lead", "worker"))
        return (_value(body, "ray_raytroupe_ledger_tokens_total", lead_agent, 'kind="input"'),
                _value(body, "ray_raytroupe_ledger_tokens_total", worker, 'kind="input"'),
                _value(body, "ray_raytroupe_ledger_requests_total", lead_agent, 'status="ok"'),
                _value(body, "ray_raytroupe_ledger_rate_limited_total", worker),
                _value(body, "ray_raytroupe_ledger_latency_s_count", lead_agent)) == (
            2000.0, 1000.0, 2.0, 1.0, 2.0)

    await wait_for_async(_exported, "the metrics exported", timeout_s=40)
