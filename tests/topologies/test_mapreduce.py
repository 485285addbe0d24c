"""Map-reduce end to end on real Ray and the emulator: who got what, on which tier, in which
order; the tree reduce; resume after a real crash; budgets; bad input.

The emulator's responder plays every role from the system prompt it receives (the shipped
prompts' first words), records each request and counts mapper calls in flight.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.util.state import list_actors

from actors.errors import BudgetExceeded, ConfigError
from actors.tiers import load_price_table
from tests.polling import wait_for
from tests.topologies.rig import TopologyRig
from topologies import create_session
from topologies.chunk_store import ChunkStore
from topologies.errors import EmptyInputError
from topologies.mapreduce import MapReduce, MapReduceResult, MapReduceTask

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "examples" / "corpus"
ROLES = {"mapper": "You are one of many mappers", "combiner": "You merge notes",
         "reducer": "You write the final answer"}


@dataclass(frozen=True)
class Request:
    role: str
    tier: str
    user: str
    system_cached: bool


@dataclass
class Responder:
    """Answers each role with a function of the user turn; records requests in arrival order."""

    answers: dict[str, Callable[[str], str]]
    mapper_delay_s: float = 0.0
    requests: list[Request] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, body: dict[str, Any]) -> str:
        system = body["system"][0]
        role = next(r for r, marker in ROLES.items() if system["text"].startswith(marker))
        user = body["messages"][-1]["content"]
        with self.lock:
            self.requests.append(Request(role, load_price_table().tier_of(body["model"]), user,
                                         system.get("cache_control") == {"type": "ephemeral"}))
        if role != "mapper":
            return self.answers[role](user)
        self.in_flight += 1  # the responder runs on the emulator's one event loop
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.mapper_delay_s)
            return self.answers[role](user)
        finally:
            self.in_flight -= 1

    def by(self, role: str) -> list[Request]:
        return [r for r in self.requests if r.role == role]


def _source(user: str) -> str:
    return user.splitlines()[0].removeprefix("Source: ")


def _query(rig: TopologyRig, task: MapReduceTask, config: dict[str, Any],
           responder: Responder, **session: Any) -> tuple[MapReduceResult, dict[str, Any]]:
    """Run one session; return its result and its Ledger roll-up by agent (read before close)."""
    rig.emulator.reset()
    rig.emulator.set_responder(responder)

    async def run() -> tuple[MapReduceResult, dict[str, Any], list[str]]:
        async with create_session("mapreduce", runtime=rig.runtime, config=config,
                                  **session) as s:
            result = await s.query(task)
            rollup = {r.key: r for r in await s.ledger_rollup("agent")}
            # Every actor the run ever had, dead (stopped) or alive.
            gcs = ray.get_runtime_context().gcs_address
            actors = [a.name for a in list_actors(address=gcs, limit=10_000)
                      if a.name.startswith(s.run_id + "/")]
            return result, rollup, actors

    try:
        result, rollup, actors = asyncio.run(run())
    finally:
        rig.emulator.set_responder(None)
    return result, {"rollup": rollup, "actors": actors}


def test_mappers_reducer_tiers_order_cache_marks_and_ledger(rig: TopologyRig,
                                                            tmp_path: Path) -> None:
    responder = Responder({"mapper": lambda user: f"evidence from {_source(user)}",
                           "reducer": lambda user: "ANSWER: " + " | ".join(
                               re.findall(r"^### (.+)$", user, re.MULTILINE))},
                          mapper_delay_s=0.02)
    config = {"chunk_size": 200, "chunk_overlap": 20, "max_parallel_mappers": 3,
              "mapper_hosts": 2, "store_dir": tmp_path}
    question = "What caused the great flood?"
    result, seen = _query(rig, MapReduceTask(question=question, inputs=(str(CORPUS),)),
                          config, responder)

    mappers, reducers = responder.by("mapper"), responder.by("reducer")
    labels = [_source(r.user) for r in mappers]
    # Every chunk mapped exactly once, on haiku, with the shared instructions marked for caching.
    assert len(labels) == len(set(labels)) == result.chunks > 12
    assert {Path(label.split(" part ")[0]).name for label in labels} == \
        {p.name for p in CORPUS.glob("*.md")}
    assert {(r.tier, r.system_cached) for r in mappers} == {("haiku", True)}
    assert 1 < responder.peak_in_flight <= 3
    # One reducer call on sonnet, after every mapper, reading the notes in corpus order.
    assert [(r.tier, r.role) for r in responder.requests[-1:]] == [("sonnet", "reducer")]
    assert len(reducers) == 1 and question in reducers[0].user
    in_order = sorted(labels, key=lambda s: (s.split(" part ")[0],
                                             int(s.split(" part ")[1].split("/")[0])))
    assert result.output == "ANSWER: " + " | ".join(in_order)
    assert {Path(s.path).name for s in result.skipped} == {"harbour-map.png",
                                                          "letter-latin1.txt"}
    # Two mapper hosts and one reducer actor for the whole run: never an actor per chunk.
    assert sorted(seen["actors"]) == sorted(
        [f"{result.run_id}/mapreduce/mapper-1", f"{result.run_id}/mapreduce/mapper-2",
         f"{result.run_id}/mapreduce/reducer"])
    rollup = seen["rollup"]
    host_calls = [rollup[name].calls for name in rollup if "/mapper-" in name]
    assert len(host_calls) == 2 and sum(host_calls) == result.chunks and min(host_calls) > 0
    assert rollup[f"{result.run_id}/mapreduce/reducer"].calls == 1
    assert sum((r.cost_usd for r in rollup.values()), Decimal(0)) == result.cost_usd > 0


def test_notes_over_the_reducer_budget_are_combined_as_a_tree(rig: TopologyRig,
                                                              tmp_path: Path) -> None:
    text = "\n\n".join(f"Record {i:03d}: the gauge on the bridge read {i % 14} feet, and the "
                       "watch rang the bell three times before midnight." for i in range(60))

    def facts(user: str) -> list[str]:
        return sorted(set(re.findall(r"\brecord-\d{3}\b", user)))

    responder = Responder({
        "mapper": lambda user: " ".join(f"record-{n}" for n in re.findall(r"Record (\d{3})",
                                                                          user)) + " " + "x" * 200,
        "combiner": lambda user: " ".join(facts(user)),
        "reducer": lambda user: " ".join(facts(user))})
    config = {"chunk_size": 40, "chunk_overlap": 0, "mapper_max_tokens": 300,
              "reducer_max_tokens": 300, "reduce_budget_tokens": 2_000, "mapper_hosts": 1,
              "store_dir": tmp_path}
    result, _ = _query(rig, MapReduceTask(question="What did the gauge read?", text=text),
                       config, responder)

    combiners = responder.by("combiner")
    assert len(combiners) == result.combines >= 2 and result.reduce_depth >= 1
    assert {r.tier for r in combiners} == {"sonnet"}
    # The final call read fewer notes than there were chunks, yet every record reached it.
    reducer = responder.by("reducer")[0]
    assert reducer.user.count("### ") < result.chunks
    assert result.output.split() == [f"record-{i:03d}" for i in range(60)]


def test_chunks_with_nothing_on_the_question_are_left_out_of_the_reduce(
        rig: TopologyRig, tmp_path: Path) -> None:
    text = "\n\n".join(f"Record {i:02d} is about the {'bridge' if i % 3 == 0 else 'harbour'}, "
                       "as the notes say." for i in range(12))
    responder = Responder({
        "mapper": lambda user: user.split("Record ")[1][:2] if "bridge" in user
        else "Nothing relevant.",
        "reducer": lambda user: " ".join(re.findall(r"^(\d{2})$", user, re.MULTILINE))})
    config = {"chunk_size": 20, "chunk_overlap": 0, "mapper_hosts": 1, "store_dir": tmp_path}
    result, _ = _query(rig, MapReduceTask(question="Which records are about the bridge?",
                                          text=text), config, responder)
    assert (result.chunks, result.chunks_irrelevant) == (12, 8)
    assert result.output == "00 03 06 09"
    assert responder.by("reducer")[0].user.count("### ") == 4


def test_a_rerun_after_a_crash_pays_only_for_the_missing_chunks(rig: TopologyRig,
                                                                tmp_path: Path) -> None:
    text = "\n\n".join(f"Record {i:03d} notes the bridge and the weir on the river Tarrow."
                       for i in range(40))
    responder = Responder({"mapper": lambda user: "note: " + _source(user),
                           "reducer": lambda user: "answer"}, mapper_delay_s=0.1)
    rig.emulator.reset()
    rig.emulator.set_responder(responder)
    store_dir = tmp_path / "store"
    driver = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("mapreduce_crash_driver.py")),
         ray.get_runtime_context().gcs_address, rig.runtime.backend.namespace,
         rig.runtime.backend.base_url, str(tmp_path / "ledger"), str(store_dir)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert driver.stdin is not None
        driver.stdin.write(text)
        driver.stdin.close()
        wait_for(lambda: _stored(store_dir) >= 6, "six chunks stored by the first run",
                 timeout_s=60)
    finally:
        driver.kill()  # SIGKILL: no clean-up, no flush, mid-map
        driver.wait(timeout=30)
        rig.emulator.set_responder(None)
    stored = _stored(store_dir)
    first_run_mapper_calls = len(responder.by("mapper"))

    from tests.topologies.mapreduce_crash_driver import CONFIG, QUESTION

    rerun = Responder(responder.answers)
    result, _ = _query(rig, MapReduceTask(question=QUESTION, text=text),
                       {**CONFIG, "store_dir": store_dir}, rerun)
    assert 6 <= stored < result.chunks and first_run_mapper_calls < result.chunks
    assert (result.chunks_reused, result.chunks_mapped) == (stored, result.chunks - stored)
    assert len(rerun.by("mapper")) == result.chunks - stored


def test_a_budget_too_small_for_one_call_stops_before_any_request(rig: TopologyRig,
                                                                  tmp_path: Path) -> None:
    responder = Responder({"mapper": lambda user: "n", "reducer": lambda user: "a"})
    with pytest.raises(BudgetExceeded, match=r"budget \$0\.000001 would be exceeded"):
        _query(rig, MapReduceTask(question="Why?", inputs=(str(CORPUS),)),
               {"store_dir": tmp_path, "mapper_hosts": 1}, responder, budget_usd="0.000001")
    assert rig.emulator.stats()["requests"] == 0


@pytest.mark.parametrize(("config", "task", "error", "match"), [
    ({}, MapReduceTask(question="  ", inputs=(str(CORPUS),)), EmptyInputError,
     "the question is empty"),
    ({}, MapReduceTask(question="Why?"), EmptyInputError, "no input"),
    ({}, MapReduceTask(question="Why?", inputs=(str(CORPUS / "harbour-map.png"),)),
     EmptyInputError, r"nothing to map .* binary \(NUL bytes\)"),
    ({}, "Why?", EmptyInputError, "a plain question needs config.inputs"),
    ({}, 42, ConfigError, "takes a MapReduceTask or a question, got int"),
    ({"chunk_size": 100, "chunk_overlap": 60}, None, ConfigError,
     r"chunk_overlap \(60\) must be at most half"),
    ({"mapper_model": "gpt-4"}, None, ConfigError, "neither a tier"),
    ({"max_parallel_mappers": 0}, None, ConfigError, "max_parallel_mappers"),
])
def test_bad_input_and_config_fail_with_one_clear_error(config: dict[str, Any], task: Any,
                                                        error: type[Exception],
                                                        match: str) -> None:
    with pytest.raises(error, match=match):
        MapReduce(config).check_input(task)


def test_a_plain_question_reads_the_configured_inputs() -> None:
    plan = MapReduce({"inputs": [str(CORPUS)], "chunk_size": 2_000}).check_input("Why?")
    assert (plan.question, len(plan.corpus.documents), plan.chunk_count) == ("Why?", 12, 12)


def _stored(store_dir: Path) -> int:
    path = store_dir / "chunks.sqlite3"
    if not path.exists():
        return 0
    store = ChunkStore(path)
    try:
        return store.count()
    finally:
        store.close()




def test_a_reducer_killed_during_the_map_phase_still_gives_the_answer(
        rig: TopologyRig, tmp_path: Path) -> None:
    """The reducer starts beside the mapper hosts and lives through the map phase: losing its
    process there (kill -9, or its node) must not lose the run's answer."""
    text = "\n\n".join(f"Record {i:03d} notes the mill race on the river Tarrow."
                       for i in range(30))
    killed: list[int] = []

    def kill_reducer() -> None:
        gcs = ray.get_runtime_context().gcs_address
        pids = [a.pid for a in list_actors(address=gcs, detail=True, limit=10_000)
                if a.name.endswith("/mapreduce/reducer") and a.state == "ALIVE"]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed.extend(pids)

    first = threading.Event()

    async def mapper(user: str) -> str:
        if not first.is_set():  # the emulator's one loop: the first mapper call kills, once
            first.set()
            await asyncio.to_thread(kill_reducer)
        return "note: " + _source(user)

    class KillingResponder(Responder):
        async def __call__(self, body: dict[str, Any]) -> str:
            if body["system"][0]["text"].startswith(ROLES["mapper"]):
                return await mapper(body["messages"][-1]["content"])
            return await super().__call__(body)

    responder = KillingResponder({"reducer": lambda user: "ANSWER from the notes"})
    result, seen = _query(rig, MapReduceTask(question="Which records?", text=text),
                          {"chunk_size": 200, "max_parallel_mappers": 3, "mapper_hosts": 2,
                           "store_dir": tmp_path}, responder)
    assert len(killed) == 1
    assert result.output == "ANSWER from the notes"
    assert seen["rollup"][f"{result.run_id}/mapreduce/reducer"].calls == 1
