"""Drill D2 (issue 12): a 429 storm with 40 calls in flight, on a real Ray, real SDK, emulator.

For 2.4 s the emulator answers every request with 429 and ``retry-after-ms: 500`` (a scripted
responder). What must hold: the calls in flight when it starts get their 429; after that one
probe per pause goes out cluster-wide while the others wait in the limiter without spending
attempts; no call fails (the storm is longer than four retry-afters, so a call that retried
into every pause would have used its five attempts); the Ledger equals the bill.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray

import cluster
from actors.messages import AgentSpec, AskRequest, Reply
from cluster.settings import Settings
from emulator import EmulatorConfig, run_emulator
from emulator.responders import ScriptedError
from tests.actors.agent_fixtures import bill, ledger_tokens

STORM_S, RETRY_AFTER_MS = 2.4, 500
IN_FLIGHT, CALLS, AGENTS = 40, 160, 2


class Storm:
    """A responder: plain replies, then 429s for ``STORM_S`` from the ``after``-th request."""

    def __init__(self, after: int) -> None:
        self.after, self.seen, self.in_storm = after, 0, 0
        self.started: float | None = None
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        now = time.monotonic()
        with self.lock:
            self.seen += 1
            if self.started is None and self.seen > self.after:
                self.started = now
            storming = self.started is not None and now < self.started + STORM_S
            self.in_storm += storming
        if storming:
            raise ScriptedError("rate_limit_error", "Number of requests has exceeded your "
                                "rate limit", headers={"retry-after-ms": str(RETRY_AFTER_MS)})
        return "The gauge showed three metres."


@pytest.fixture(scope="module")
def storm_runtime(ray_session: None, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Any, Any]]:
    with run_emulator(EmulatorConfig(latency_s=0.05)) as emu:
        settings = Settings(anthropic_base_url=emu.base_url, _env_file=None,
                            data_dir=tmp_path_factory.mktemp("storm"))
        yield cluster.init(settings=settings, namespace=f"storm-{uuid.uuid4().hex[:6]}"), emu


async def ask_all(agents: list[Any], calls: int = CALLS,
                  in_flight: int = IN_FLIGHT) -> list[Reply | BaseException]:
    """``calls`` asks over ``agents``, ``in_flight`` at a time; an error is returned, not raised."""
    gate = asyncio.Semaphore(in_flight)

    async def one(i: int) -> Reply | BaseException:
        async with gate:
            try:
                return await agents[i % len(agents)].ask.remote(
                    AskRequest(prompt=f"Storm call {i}", max_tokens=20))
            except Exception as exc:
                return exc

    return await asyncio.gather(*(one(i) for i in range(calls)))


def test_d2_a_429_storm_sends_one_probe_per_retry_after_and_fails_no_call(
        storm_runtime: tuple[Any, Any]) -> None:
    runtime, emu = storm_runtime
    run_id = f"storm-{uuid.uuid4().hex[:6]}"
    agents = [runtime.spawn(AgentSpec(name=f"{run_id}/storm/worker-{i}", tier="haiku",
                                      run_id=run_id)) for i in range(AGENTS)]
    storm = Storm(after=IN_FLIGHT)
    emu.set_responder(storm)
    try:
        outcomes = asyncio.run(ask_all(agents))
        ray.get([a.flush.remote() for a in agents])
    finally:
        emu.set_responder(None)
    failed = [o for o in outcomes if not isinstance(o, Reply)]
    assert storm.started is not None
    assert not failed, f"{len(failed)} calls failed: {failed[:1]}"
    # The 40 in flight when it began, then one probe per 0.5 s pause (and one spare for the
    # pause a late 429 extends). First come, first served sent them all again every pause.
    assert storm.in_storm <= IN_FLIGHT + STORM_S * 1000 / RETRY_AFTER_MS + 1, storm.in_storm
    stats = emu.stats()
    assert stats["responses_by_status"]["429"] == storm.in_storm
    totals = ray.get(runtime.ledger.totals.remote(run_id))
    tokens, usd = bill(stats)
    assert (ledger_tokens(totals), totals.cost_usd) == (tokens, usd)
