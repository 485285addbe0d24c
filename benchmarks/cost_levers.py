"""The guide's cost levers, each against its own baseline measured in the same run.

Every lever runs on the emulator (its own subprocess, ``EmulatorProcess``), which bills from
the one price table; costs are read from the Ledger's roll-ups, which equal the emulator's bill.

- ``measure_cache`` -> ``rerun_cost_ratio``: the demo corpus (``examples/corpus``) through a
  ``mapreduce`` session twice, identically, with the response cache on (``RAYTROUPE_CACHE``'s
  runtime default, a fresh SQLite store) and the chunk store off (``resume=False``, so only the
  response cache can spare the second run anything): second run's USD / first run's USD
  (goal <= 0.01). ``rerun_saved_usd`` is what the second run's Ledger says the hits saved.
- ``measure_prompt_cache`` -> ``prompt_cache_input_cost_ratio``: mapper agents sharing a
  system prompt of 2,048 tokens (exactly the haiku tier's minimum cacheable prefix, counted as
  the emulator counts) each map short chunks, ``--in-flight`` calls at a time, with automatic
  prompt caching on, then again off (``AgentSpec(prompt_cache=False)``) on a fresh emulator:
  USD of input tokens (uncached + cache writes + cache reads) on / off (goal <= 0.35). Direct
  agents rather than a ``mapreduce`` session, because the session's mapper prompt is shorter
  than the minimum and is not a knob; the calls are what a mapper host sends.

- speculation, routing and Message Batches: ``benchmarks/cost_levers_calls.py`` says what
  each measures.

Prints ONE JSON line: ``{"bench": "cost_levers", "rerun_cost_ratio": ..., ...}``.

Usage: ``python benchmarks/cost_levers.py [--mappers 2] [--chunks 48] [--in-flight 8]
[--speculative-calls 80]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from cost_levers_calls import (  # benchmarks/: run as a script from there
    measure_batches,
    measure_routing,
    measure_speculation,
)

import cluster
from actors.agent import spawn_agent
from actors.messages import AgentSpec, AskRequest
from actors.tiers import load_price_table
from cluster.settings import Settings
from emulator import EmulatorProcess
from topologies import create_session
from topologies.mapreduce import MapReduceTask

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus"
BIG = 1_000_000_000
"""A limit that never binds."""
SYSTEM_TOKENS = 2_048
"""The shared system prompt's size: the haiku tier's minimum cacheable prefix."""

Measure = Callable[[cluster.Runtime, argparse.Namespace], Awaitable[dict[str, Any]]]


def _on(base: cluster.Runtime, base_url: str, **backend: Any) -> cluster.Runtime:
    """The shared runtime, pointed at another emulator, with backend fields replaced."""
    return dataclasses.replace(base, backend=dataclasses.replace(
        base.backend, base_url=base_url, **backend))


async def _mapreduce_usd(runtime: cluster.Runtime) -> tuple[Decimal, Decimal, int]:
    """One map-reduce over the demo corpus: (USD, USD saved by cache hits, cache hits)."""
    config = {"chunk_size": 200, "chunk_overlap": 0, "max_parallel_mappers": 8,
              "mapper_hosts": 2, "mapper_max_tokens": 64, "resume": False}
    session = create_session("mapreduce", runtime=runtime, config=config)
    async with session:
        async for _event in session.run(MapReduceTask(
                question="What happened in the flood of 1887?", inputs=[str(CORPUS)])):
            pass
        [totals] = await session.ledger_rollup("run")
    return totals.cost_usd, totals.saved_usd, totals.cache_hits


async def measure_cache(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    """The response cache: an identical second map-reduce run against the first."""
    store = Path(tempfile.mkdtemp(prefix="cost-levers-cache-")) / "response_cache.sqlite"
    with EmulatorProcess() as emu:
        runtime = _on(base, emu.base_url, cache=True, cache_url=f"sqlite:///{store}")
        first, _, _ = await _mapreduce_usd(runtime)
        second, saved, hits = await _mapreduce_usd(runtime)
        billed = Decimal(emu.stats()["total_cost_usd"])
    assert billed == first + second, "the Ledger must equal the emulator's bill"
    return {"first_run_usd": float(first), "rerun_usd": float(second),
            "rerun_cache_hits": hits, "rerun_saved_usd": float(saved),
            "rerun_cost_ratio": round(float(second / first), 4)}


def _system_prompt(tokens: int) -> str:
    """A system prompt of exactly ``tokens`` as the emulator counts (bytes / 4, +1 a block)."""
    line = "Extract every date, place and person from the chunk; one note per line. "
    return (line * (tokens * 4 // len(line) + 1))[: (tokens - 1) * 4]


def _chunk(i: int) -> str:
    return (f"Chunk {i}: on the {i % 28 + 1}th the harbour master logged {i * 7 % 90} boats "
            f"and the tide at {i % 14} feet; Mary Couch wrote of the bell at St Piran's.")


async def _mapper_input_usd(runtime: cluster.Runtime, args: argparse.Namespace,
                            prompt_cache: bool) -> Decimal:
    """Map ``--chunks`` chunks over ``--mappers`` agents; the USD of their input tokens."""
    run_id = f"pc-{'on' if prompt_cache else 'off'}-{uuid.uuid4().hex[:6]}"
    system = _system_prompt(SYSTEM_TOKENS)
    agents = [spawn_agent(AgentSpec(name=f"{run_id}/map/mapper_{i}", role="mapper",
                                    tier="haiku", run_id=run_id, system=system,
                                    prompt_cache=prompt_cache), runtime.backend)
              for i in range(args.mappers)]
    gate = asyncio.Semaphore(args.in_flight)

    async def one(i: int) -> None:
        async with gate:
            await agents[i % len(agents)].ask.remote(AskRequest(prompt=_chunk(i),
                                                                max_tokens=16))

    await asyncio.gather(*(one(i) for i in range(args.chunks)))
    await asyncio.gather(*(a.flush.remote() for a in agents))
    [totals] = await runtime.ledger.rollup.remote(run_id, "run")
    spec = load_price_table().spec("haiku")
    return spec.cost_usd(input_tokens=totals.input_tokens, output_tokens=0,
                         cache_write_5m=totals.cache_write_5m,
                         cache_write_1h=totals.cache_write_1h, cache_read=totals.cache_read)


async def measure_prompt_cache(base: cluster.Runtime,
                               args: argparse.Namespace) -> dict[str, Any]:
    """Automatic prompt caching: mappers' input cost with it on against off."""
    costs = {}
    for on in (True, False):  # a fresh emulator each: no prompt-cache entry carries over
        with EmulatorProcess() as emu:
            costs[on] = await _mapper_input_usd(_on(base, emu.base_url), args, on)
    return {"prompt_cache_input_usd_on": float(costs[True]),
            "prompt_cache_input_usd_off": float(costs[False]),
            "prompt_cache_input_cost_ratio": round(float(costs[True] / costs[False]), 4)}


async def _speculation(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    return await measure_speculation(base, calls=args.speculative_calls,
                                     in_flight=args.in_flight)


async def _routing(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    return await measure_routing(base)


async def _batches(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    return await measure_batches(base)


MEASURES: list[Measure] = [measure_cache, measure_prompt_cache, _speculation, _routing,
                           _batches]
"""Each lever's measurement; each returns its figures for the one JSON line."""


def start_runtime() -> cluster.Runtime:
    """A Ray of our own (2 CPUs) with limits far above the load, and its own data dir."""
    settings = Settings(anthropic_base_url="http://127.0.0.1:9", _env_file=None,
                        data_dir=Path(tempfile.mkdtemp(prefix="cost-levers-")),
                        rpm=BIG, itpm=BIG, otpm=BIG, max_concurrency=10_000)
    return cluster.init(address="local", settings=settings, num_cpus=2, include_dashboard=False,
                        object_store_memory=300 * 1024 * 1024, log_to_driver=False)


async def _collect(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"bench": "cost_levers"}
    for measure in MEASURES:
        figures |= await measure(base, args)
    return figures


def main() -> None:
    """Parse the knobs, run every lever's measurement, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mappers", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=48)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--speculative-calls", type=int, default=80)
    args = parser.parse_args()
    started = time.perf_counter()
    base = start_runtime()
    try:
        figures = asyncio.run(_collect(base, args))
    finally:
        cluster.shutdown()
    figures["bench_wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
