"""Drill D2 (issue 12): a 429 storm with 40 calls in flight, on a real Ray, real SDK, emulator.

For 2.4 s the emulator answers every request with 429 and ``retry-after-ms: 500`` (a scripted
responder). What must hold: the calls in flight when it starts get their 429; after that one
probe per pause goes out cluster-wide while the others wait in the limiter without spending
attempts; no call fails (the storm is longer than four retry-afters, so a call that retried
into every pause would have used its five attempts); the Ledger equals the bill.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray

import cluster
from actors.messages import AgentSpec, Reply
from cluster.settings import Settings
from emulator import EmulatorConfig, run_emulator
from emulator.responders import ScriptedError
from tests.actors.agent_fixtures import bill, ledger_tokens
from tests.drills.fault_window import FaultWindow, ask_all

STORM_S, RETRY_AFTER_MS = 2.4, 500
IN_FLIGHT, CALLS, AGENTS = 40, 160, 2


def storm(after: int) -> FaultWindow:
    """429s with ``retry-after-ms`` for ``STORM_S`` from the ``after``-th request."""
    return FaultWindow(after, STORM_S, lambda: ScriptedError(
        "rate_limit_error", "Number of requests has exceeded your rate limit",
        headers={"retry-after-ms": str(RETRY_AFTER_MS)}))


@pytest.fixture(scope="module")
def storm_runtime(ray_session: None, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[Any, Any]]:
    with run_emulator(EmulatorConfig(latency_s=0.05)) as emu:
        settings = Settings(anthropic_base_url=emu.base_url, _env_file=None,
                            data_dir=tmp_path_factory.mktemp("storm"))
        yield cluster.init(settings=settings, namespace=f"storm-{uuid.uuid4().hex[:6]}"), emu


def test_d2_a_429_storm_sends_one_probe_per_retry_after_and_fails_no_call(
        storm_runtime: tuple[Any, Any]) -> None:
    runtime, emu = storm_runtime
    run_id = f"storm-{uuid.uuid4().hex[:6]}"
    agents = [runtime.spawn(AgentSpec(name=f"{run_id}/storm/worker-{i}", tier="haiku",
                                      run_id=run_id)) for i in range(AGENTS)]
    window = storm(after=IN_FLIGHT)
    emu.set_responder(window)
    try:
        outcomes = asyncio.run(ask_all(agents, CALLS, IN_FLIGHT))
        ray.get([a.flush.remote() for a in agents])
    finally:
        emu.set_responder(None)
    failed = [o for o in outcomes if not isinstance(o, Reply)]
    assert window.started is not None
    assert not failed, f"{len(failed)} calls failed: {failed[:1]}"
    # The 40 in flight when it began, then one probe per 0.5 s pause (and one spare for the
    # pause a late 429 extends). First come, first served sent them all again every pause.
    probes = STORM_S * 1000 / RETRY_AFTER_MS + 1
    assert window.in_window <= IN_FLIGHT + probes, window.in_window
    stats = emu.stats()
    assert stats["responses_by_status"]["429"] == window.in_window
    totals = ray.get(runtime.ledger.totals.remote(run_id))
    tokens, usd = bill(stats)
    assert (ledger_tokens(totals), totals.cost_usd) == (tokens, usd)
