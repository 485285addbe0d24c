"""Drill D16 (issue 12): the API is down (529) while 30 calls are in flight; real Ray, SDK.

For 2 s the emulator answers every request ``overloaded_error`` (a scripted responder). What
must hold: the limiter's circuit breaker opens after a few overloaded answers, so the emulator
sees the calls in flight plus a handful of probes, not every call retrying on its own backoff
(each would retry three times in 2 s); no call fails, since the outage is shorter than the
retry budget; an outage longer than a call's ``max_wait_s`` fails it with one clear
``Overloaded`` line; the Ledger equals the bill.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import ray

from actors.agent import spawn_agent
from actors.errors import Overloaded
from actors.messages import AgentSpec, Reply
from actors.retry_policy import RetryPolicy
from emulator import EmulatorConfig
from emulator.responders import ScriptedError
from tests.drills.conftest import Drill
from tests.drills.fault_window import FaultWindow, ask_all

EMULATOR = EmulatorConfig(latency_s=0.05)
OUTAGE_S, IN_FLIGHT, CALLS, AGENTS = 2.0, 30, 90, 2


def outage(after: int, length_s: float) -> FaultWindow:
    """529 ``overloaded_error`` for ``length_s`` from the ``after``-th request."""
    return FaultWindow(after, length_s, lambda: ScriptedError("overloaded_error"),
                       reply="The pump was restarted at noon.")


def test_d16_an_outage_sends_a_few_probes_and_fails_only_calls_past_their_time_budget(
        drill: Drill) -> None:
    run_id = f"outage-{uuid.uuid4().hex[:6]}"
    agents = [drill.runtime.spawn(AgentSpec(name=f"{run_id}/worker-{i}", tier="haiku",
                                            run_id=run_id)) for i in range(AGENTS)]
    short = dataclasses.replace(drill.runtime.backend, retry=RetryPolicy(max_wait_s=1.5))
    agent = spawn_agent(AgentSpec(name=f"{run_id}/short-budget", tier="haiku",
                                  run_id=run_id), short)  # starts while the others work
    window = outage(after=IN_FLIGHT, length_s=OUTAGE_S)
    drill.emulator.set_responder(window)
    outcomes = asyncio.run(ask_all(agents, CALLS, IN_FLIGHT))
    ray.get([a.flush.remote() for a in agents])
    failed = [o for o in outcomes if not isinstance(o, Reply)]
    assert window.started is not None
    assert not failed, f"{len(failed)} calls failed: {failed[:1]}"
    # The 30 in flight when it began, then a probe per pause (1 s, 2 s) and a few spares
    # (processes still holding stock when it began). Each call retrying on its own: ~90.
    assert window.in_window <= IN_FLIGHT + 8, window.in_window

    # An outage longer than the calls' time budget: one clear line each, soon after it.
    drill.emulator.set_responder(outage(after=0, length_s=60))
    started = time.monotonic()
    errors = asyncio.run(ask_all([agent], 4, IN_FLIGHT))
    took = time.monotonic() - started
    ray.get(agent.flush.remote())
    drill.emulator.set_responder(None)
    assert all(isinstance(e, Overloaded) for e in errors), errors
    for error in errors:
        line = str(error.cause)  # what the public API raises: Ray's wrapper adds its traceback
        assert "\n" not in line and "the API was overloaded for" in line, line
        assert f"after {error.attempts} attempt(s)" in line and "max_wait_s=1.5" in line, line
    assert took < 10, took  # its budget (1.5 s), not an endless wait in the open breaker
    drill.assert_ledger_is_bill(run_id)
