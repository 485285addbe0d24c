"""What survives a ``kill -9`` of an Agent now that replies do not wait for the Ledger.

A reply leaves only once its records are in the agent's local journal; the Ledger hears of them
in batches (up to half a second later). Killing the agent right after its replies must not lose
them: its restarted incarnation ships what the journal holds (``docs/architecture.md``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import ray
from ray.util.state import list_actors

from actors.messages import AskRequest
from actors.record_journal import journal_dir, read_journal, session_dir
from emulator import EmulatorConfig, run_emulator
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens

CALLS = 6


def _pid(handle: Any) -> int:
    """The pid of a live actor's process (0 would mean "my process group" to ``os.kill``)."""
    ray.get(handle.flush.remote())  # the actor is up
    gcs = ray.get_runtime_context().gcs_address
    [state] = list_actors(address=gcs, filters=[("actor_id", "=", handle._actor_id.hex())],
                          detail=True)
    assert state.pid and state.pid != os.getpid()
    return state.pid


def _journaled(directory: Path) -> int:
    return sum(len(read_journal(p)) for p in directory.glob("*.jsonl"))


def _wait_for_calls(rig: Rig, run_id: str, calls: int, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        totals = rig.ledger_totals(run_id)
        if totals.calls >= calls or time.monotonic() > deadline:
            return totals
        time.sleep(0.2)


def test_answered_calls_survive_a_kill_9_of_their_agent_right_after_the_replies(
        rig: Rig) -> None:
    with run_emulator(EmulatorConfig(latency_s=0.0)) as emu:
        agent, run_id = rig.agent("haiku", emulator=emu)
        pid = _pid(agent)
        replies = ray.get([agent.ask.remote(AskRequest(prompt=f"Question {i}", max_tokens=20))
                           for i in range(CALLS)])
        os.kill(pid, signal.SIGKILL)  # before the journal's half-second linger ships them
        directory = journal_dir(session_dir(), agent._actor_id.hex())
        unshipped = _journaled(directory)
        totals = _wait_for_calls(rig, run_id, CALLS)
        stats = emu.stats()

    assert len(replies) == CALLS
    assert unshipped > 0, "the kill came after the records were shipped: nothing was tested"
    assert totals.calls == CALLS and totals.attempts == stats["requests"] == CALLS
    tokens, usd = bill(stats)
    assert ledger_tokens(totals) == tokens and totals.cost_usd == usd
    assert _journaled(directory) == 0  # shipped journals are deleted

