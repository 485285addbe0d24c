"""The fault drills of issue 12, run from outside pytest: one JSON line per drill.

Each drill runs twice against a loopback emulator on a private Ray: once without its fault
(the baseline, ``baseline_runtime_s``) and once with it (``runtime_s``); both in this run, so
the ratio compares like with like. Every line holds the same fields:

* ``calls_ok`` / ``calls_failed``: logical calls answered / failed with our error.
* ``attempts``: HTTP attempts the Ledger recorded; ``server_429``: 429s the emulator sent.
* ``ledger_minus_bill_tokens`` / ``ledger_minus_bill_usd``: the Ledger against the emulator's
  bill (0 when every billed attempt is counted once; negative: the Ledger trails the bill).
* ``duplicate_billed_call_ids``: logical calls (or map-reduce chunks) billed more than once.
* ``calls_hung``: calls with no answer after ``CALL_TIMEOUT_S`` (abandoned, not re-asked);
  ``baseline_calls_hung`` the same without the fault.
* ``recovery_s``: from the fault (a kill) to the next reply; null where nothing is killed.

The drills:

* ``D1``: transient 529 / 500 on 30 % of requests (the agents' retry policy absorbs them).
* ``D8``: ``kill -9`` of the Ledger after a quarter of the replies.
* ``D9``: ``kill -9`` of the RateLimiter under a binding concurrency limit (4 on both sides,
  8 asked): any overshoot is a 429.
* ``D14a``: 50 asks at once under a budget that fits about half of their worst cases.
* ``D14b``: map-reduce with a budget that stops the map phase, then a re-run with room for
  everything: ``calls_ok`` chunks stored by the stopped run, the re-run's duplicates.
* ``D16``: the API down (529 to every request) for ``--outage-s`` (30 s) with calls in flight;
  ``outage_rate_ratio``: requests per second during the outage over the baseline's rate.
* ``soak``: the 3-minute chaos soak of issue 12 (too long for the test suite's budget, so it
  is a drill here): ``--soak-s`` of calls with 529s, 500s and Ray's own ``WorkerKillerActor``
  killing agents mid-ask (``kills``); no baseline.

Usage: ``python benchmarks/drills.py [--calls 200] [--in-flight 16] [--latency 0.05]
[--outage-s 30] [--only D1 D8 D9 D14a D14b D16]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.state import list_actors

import cluster
from actors.errors import BudgetExceeded, RaytroupeError
from actors.messages import AgentSpec, AskRequest
from cluster.settings import Settings
from emulator import EmulatorConfig, Faults, Limits, run_emulator
from emulator.responders import ScriptedError
from topologies import create_session
from topologies.mapreduce import MapReduceTask

CALL_TIMEOUT_S = 60.0
"""A call with no answer after this long is counted in ``calls_hung`` (no drill should have
any: every fault here is shorter than a call's retry budget)."""
TOKENS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")


@dataclass
class Driven:
    """What driving one agent produced."""

    ok: int = 0
    failed: int = 0
    hung: int = 0
    runtime_s: float = 0.0
    recovery_s: float | None = None


@contextlib.contextmanager
def _rig(config: EmulatorConfig, **settings: Any) -> Iterator[tuple[cluster.Runtime, Any]]:
    """An emulator and a runtime of its own (fresh namespace: its own Ledger and limiter)."""
    with run_emulator(config) as emu, tempfile.TemporaryDirectory() as data:
        runtime = cluster.init(settings=Settings(anthropic_base_url=emu.base_url,
                                                 data_dir=Path(data), _env_file=None,
                                                 **settings),
                               namespace=f"drills-{uuid.uuid4().hex[:6]}")
        yield runtime, emu


def _kill_9(handle: Any) -> None:
    """SIGKILL the process behind an actor handle (no clean shutdown)."""
    gcs = ray.get_runtime_context().gcs_address
    [state] = list_actors(address=gcs, filters=[("actor_id", "=", handle._actor_id.hex())],
                          detail=True)
    os.kill(state.pid, signal.SIGKILL)


async def _drive(agents: list[Any], calls: int, in_flight: int, run_id: str,
                 kill: Any = None, timeout_s: float = CALL_TIMEOUT_S, prefix: str = "") -> Driven:
    """Ask ``calls`` questions, ``in_flight`` at a time over ``agents``; kill ``kill`` once a
    quarter of the replies are in; re-ask a call whose agent died (as a caller would); a call
    with no answer after ``timeout_s`` is counted as hung and abandoned."""
    gate, out, killed_at = asyncio.Semaphore(in_flight), Driven(), [0.0]
    started = time.monotonic()

    async def one(i: int) -> None:
        async with gate:
            agent = agents[i % len(agents)]
            request = AskRequest(prompt=f"Question {prefix}{i}", max_tokens=30,
                                 run_id=run_id, call_id=f"q{prefix}{i}")
            for _ in range(50):
                try:
                    await asyncio.wait_for(asyncio.shield(agent.ask.remote(request)), timeout_s)
                    out.ok += 1
                    break
                except TimeoutError:
                    out.hung += 1
                    break
                except RayActorError:
                    await asyncio.sleep(0.2)
                except RaytroupeError:
                    out.failed += 1
                    break
            if killed_at[0] and out.recovery_s is None:
                out.recovery_s = round(time.monotonic() - killed_at[0], 3)
            if kill is not None and not killed_at[0] and out.ok >= calls // 4:
                killed_at[0] = time.monotonic()
                _kill_9(kill)

    await asyncio.gather(*(one(i) for i in range(calls)))
    out.runtime_s = round(time.monotonic() - started, 3)
    return out


def _line(drill: str, runtime: cluster.Runtime, emu: Any, run_ids: list[str], out: Driven,
          baseline_s: float | None, **extra: Any) -> dict[str, Any]:
    """The drill's JSON line: Ledger (journal) against the emulator's bill."""
    stats = emu.stats()
    path = ray.get(runtime.ledger.journal_path.remote())
    marks = ",".join("?" * len(run_ids))
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(f"SELECT call_id, status, cost_usd, {', '.join(TOKENS)} FROM calls "  # nosec B608 - placeholders only
                          f"WHERE run_id IN ({marks})", run_ids).fetchall()
    billed = {t: sum(m[t] for m in stats["billed"].values()) for t in TOKENS}
    ledger = {t: sum(r[3 + k] for r in rows) for k, t in enumerate(TOKENS)}
    paid = Counter(r[0].split(".")[0] for r in rows if r[1] == "ok")
    return {"bench": "drills", "drill": drill, "calls_ok": out.ok, "calls_failed": out.failed,
            "calls_hung": out.hung,
            "attempts": len(rows), "server_429": stats["responses_by_status"].get("429", 0),
            "ledger_minus_bill_tokens": {t: ledger[t] - billed[t] for t in TOKENS},
            "ledger_minus_bill_usd": format((sum((Decimal(r[2]) for r in rows), Decimal(0))
                                             - Decimal(stats["total_cost_usd"])).normalize(),
                                            "f"),
            "duplicate_billed_call_ids": sum(1 for n in paid.values() if n > 1),
            "recovery_s": out.recovery_s, "runtime_s": out.runtime_s,
            "baseline_runtime_s": baseline_s, **extra}


def _agents(runtime: cluster.Runtime, run_id: str, count: int = 1) -> list[Any]:
    agents = [runtime.spawn(AgentSpec(name=f"{run_id}/drill/w-{i}", run_id=run_id))
              for i in range(count)]
    ray.get([a.__ray_ready__.remote() for a in agents])  # start-up is not the drill's time
    return agents


def _agent_drill(drill: str, args: argparse.Namespace, config: EmulatorConfig,
                 faulty: EmulatorConfig, kill: Callable[[cluster.Runtime], Any] | None = None,
                 agents: int = 1, **settings: Any) -> dict[str, Any]:
    """One drill of direct asks: baseline, then the same with the fault."""
    with _rig(config, **settings) as (runtime, _):
        run_id = f"{drill}-base"
        base = asyncio.run(_drive(_agents(runtime, run_id, agents), args.calls,
                                  args.in_flight, run_id))
    with _rig(faulty, **settings) as (runtime, emu):
        run_id = drill
        workers = _agents(runtime, run_id, agents)
        out = asyncio.run(_drive(workers, args.calls, args.in_flight, run_id,
                                 kill=kill(runtime) if kill else None))
        ray.get([w.flush.remote() for w in workers])
        return _line(drill, runtime, emu, [run_id], out, base.runtime_s,
                     baseline_calls_hung=base.hung)


def _outage_drill(args: argparse.Namespace) -> dict[str, Any]:
    """D16: every request answered 529 for ``--outage-s`` once a quarter of the calls went.

    ``outage_rate_ratio``: requests per second the emulator saw during the outage over the
    baseline run's rate (the limiter's circuit breaker should make it a few probes)."""
    config = EmulatorConfig(latency_s=args.latency)
    with _rig(config) as (runtime, emu):
        base = asyncio.run(_drive(_agents(runtime, "D16-base", 2), args.calls, args.in_flight,
                                  "D16-base"))
        base_rate = emu.stats()["requests"] / base.runtime_s
    with _rig(config) as (runtime, emu):
        seen, window = [0], [math.inf, math.inf]

        def responder(body: dict[str, Any]) -> str:
            seen[0] += 1
            now = time.monotonic()
            if seen[0] == args.calls // 4:
                window[:] = [now, now + args.outage_s]
            if window[0] <= now < window[1]:
                raise ScriptedError("overloaded_error")
            return "Fine."

        workers = _agents(runtime, "D16", 2)
        emu.set_responder(responder)
        out = asyncio.run(_drive(workers, args.calls, args.in_flight, "D16"))
        ray.get([w.flush.remote() for w in workers])
        down = emu.stats()["responses_by_status"].get("529", 0)
        return _line("D16", runtime, emu, ["D16"], out, base.runtime_s,
                     outage_s=args.outage_s, server_529=down,
                     outage_rate_ratio=round(down / args.outage_s / base_rate, 4))


def _budget_drill(args: argparse.Namespace) -> dict[str, Any]:
    """D14a: 50 asks at once; the cap fits about half of their worst cases."""
    config = EmulatorConfig(latency_s=args.latency)
    with _rig(config) as (runtime, _):
        base = asyncio.run(_drive(_agents(runtime, "D14a-base"), 50, 50, "D14a-base"))
    with _rig(config) as (runtime, emu):
        cap = Decimal("0.0003")  # a 30-token haiku ask's worst case is ~$0.00002
        ray.get(runtime.ledger.set_budget.remote("D14a", cap))
        [agent] = _agents(runtime, "D14a")
        out = asyncio.run(_drive([agent], 50, 50, "D14a"))
        ray.get(agent.flush.remote())
        spent = ray.get(runtime.ledger.budget.remote("D14a")).spent_usd
        return _line("D14a", runtime, emu, ["D14a"], out, base.runtime_s,
                     budget_usd=str(cap), spent_usd=str(spent))


def _map_answer(body: dict[str, Any]) -> str:
    if "mappers" in body["system"][0]["text"]:
        return "The bridge is named in " + body["messages"][-1]["content"][8:20]
    return "answer"


async def _map_run(runtime: cluster.Runtime, store: Path, budget: str | None) -> tuple[str, bool]:
    """One map-reduce session; its run id and whether the budget stopped it."""
    text = "\n\n".join(f"Record {i:03d} notes the bridge and the weir on the river Tarrow."
                       for i in range(40))
    config = {"chunk_size": 25, "chunk_overlap": 0, "max_parallel_mappers": 8,
              "mapper_hosts": 1, "mapper_max_tokens": 200, "store_dir": store}
    session = create_session("mapreduce", runtime=runtime, budget_usd=budget, config=config)
    async with session:
        try:
            await session.query(MapReduceTask(question="Which records name the bridge?",
                                              text=text))
        except BudgetExceeded:
            return session.run_id, True
    return session.run_id, False


def _mapreduce_drill(args: argparse.Namespace) -> dict[str, Any]:
    """D14b: a budget stop, then a re-run that must pay only for the missing chunks."""
    config = EmulatorConfig(latency_s=args.latency)
    with _rig(config) as (runtime, emu), tempfile.TemporaryDirectory() as store:
        emu.set_responder(_map_answer)
        started = time.monotonic()
        asyncio.run(_map_run(runtime, Path(store) / "base", None))
        base_s = round(time.monotonic() - started, 3)
        emu.reset()
        started = time.monotonic()
        stopped_id, stopped = asyncio.run(_map_run(runtime, Path(store) / "d", "0.0004"))
        stored = emu.stats()["billed"].get("claude-haiku-5-5", {}).get("requests", 0)
        rerun_id, _ = asyncio.run(_map_run(runtime, Path(store) / "d", None))
        out = Driven(ok=stored, failed=int(stopped),
                     runtime_s=round(time.monotonic() - started, 3))
        return _line("D14b", runtime, emu, [stopped_id, rerun_id], out, base_s)


def _asks_only() -> Callable[[Any], bool]:
    """The soak killer's filter: kill only processes running an Agent's ask (the killer
    calls this once; it runs inside the killer actor, so it is pickled by value)."""
    return lambda task: (task.name or "").endswith(".ask")


def _soak_drill(args: argparse.Namespace) -> dict[str, Any]:
    """A chaos soak: calls for ``--soak-s`` seconds over 4 agents, 5 % 529s and 5 % 500s,
    while Ray's own ``WorkerKillerActor`` (``ray._private.test_utils``) kills -9 the process
    of a running ask every ``soak_s / 8`` seconds (at most 4 kills: an agent restarts 3
    times). The Ledger may trail the bill by the attempts in flight at each kill."""
    from ray._private.test_utils import WorkerKillerActor

    faulty = EmulatorConfig(latency_s=args.latency, seed=11,
                            faults=Faults(overloaded=0.05, server_error=0.05))
    with _rig(faulty) as (runtime, emu):
        agents = _agents(runtime, "soak", 4)
        # get_and_run_resource_killer's own set-up, plus RAY_ADDRESS: the killer's State API
        # client would otherwise find every Ray on this box and refuse to choose.
        gcs = ray.get_runtime_context().gcs_address
        killer = WorkerKillerActor.options(runtime_env={"env_vars": {"RAY_ADDRESS": gcs}}).remote(
            ray.get_runtime_context().get_node_id(), kill_interval_s=args.soak_s / 8,
            max_to_kill=4, kill_filter_fn=_asks_only)
        ray.get(killer.ready.remote())
        killer.run.remote()
        out = asyncio.run(_soak(agents, args))
        ray.get(killer.stop_run.remote())
        killed = len(ray.get(killer.get_killed_nodes.remote(), timeout=60))
        for agent in agents:  # an agent whose restarts were used up is dead: skip it
            with contextlib.suppress(ray.exceptions.RayError):
                ray.get(agent.flush.remote(), timeout=60)
        ray.kill(killer)
        return _line("soak", runtime, emu, ["soak"], out, None, kills=killed)


async def _soak(agents: list[Any], args: argparse.Namespace) -> Driven:
    """Ask in batches of ``--calls`` until ``--soak-s`` is up; the figures of every batch."""
    total, started, batch = Driven(), time.monotonic(), 0
    while time.monotonic() - started < args.soak_s:
        out = await _drive(agents, args.calls, args.in_flight, "soak", prefix=f"s{batch}-")
        total.ok, total.failed, total.hung = (total.ok + out.ok, total.failed + out.failed,
                                              total.hung + out.hung)
        batch += 1
    total.runtime_s = round(time.monotonic() - started, 3)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--soak-s", type=float, default=180.0)
    parser.add_argument("--outage-s", type=float, default=30.0)
    parser.add_argument("--only", nargs="*", help="drills to run (default: all)")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False,
             namespace="drills")
    plain = EmulatorConfig(latency_s=args.latency)
    drills: dict[str, Callable[[], dict[str, Any]]] = {
        "D1": lambda: _agent_drill("D1", args, plain, plain.model_copy(
            update={"faults": Faults(overloaded=0.15, server_error=0.15), "seed": 7})),
        "D8": lambda: _agent_drill("D8", args, plain, plain, kill=lambda rt: rt.ledger),
        "D9": lambda: _agent_drill(
            "D9", args, plain.model_copy(update={"limits": Limits(max_concurrency=4)}),
            plain.model_copy(update={"limits": Limits(max_concurrency=4)}),
            kill=lambda rt: rt.limiter, agents=2, max_concurrency=4),
        "D14a": lambda: _budget_drill(args),
        "D16": lambda: _outage_drill(args),
        "D14b": lambda: _mapreduce_drill(args),
        "soak": lambda: _soak_drill(args),
    }
    for name, drill in drills.items():
        if not args.only or name in args.only:
            print(json.dumps(drill()), flush=True)


if __name__ == "__main__":
    main()
