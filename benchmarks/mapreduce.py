"""Map-reduce at scale: how close to ideal, under a binding limit, and in how much driver memory.

Three cases in one Ray (2 CPUs), each against its own emulator subprocess (``EmulatorProcess``,
so the server has its own GIL), each a ``mapreduce`` session over generated text cut into
exactly ``--chunks`` chunks (one record per chunk), ``--in-flight`` mapper calls at a time:

1. ``wall_over_ideal``: the emulator answers every request in ``--latency`` seconds, no limits.
   ideal = ceil(chunks / in_flight) x latency + reduce, where reduce = one latency (mapper
   notes are capped at 16 tokens and the reducer's budget is raised, so one final call reads
   every note). Its baseline in the same run, against the same emulator just before:
   ``plain_wall_over_ideal``, the same work through the plain asyncio script a user would
   write instead (one ``AsyncAnthropic`` on the aiohttp transport, a Semaphore of
   ``--in-flight``, an aiolimiter; then its notes in one streamed call of the same size as
   the reducer's), over the same ideal; on a shared 2-core box it is far from 1 too.
   ``plain_map_over_ideal`` is its map calls alone over ceil(chunks / in_flight) x latency
   (what ``plain_wall_over_ideal`` was before 2026-12-05's sixth session), and
   ``plain_reduce_ms`` its reduce call: the emulator answers a 200 KB prompt 15-40 ms after
   its latency (it summarises the prompt first), whoever asks. ``wall_over_plain`` is the
   quotient of the two walls.
2. ``limited_wall_over_ideal``: the same, with an input-tokens/min limit on the mappers' tier
   that binds (the emulator enforces it; the RateLimiter is told the same number).
   ideal = max(ceil(chunks / in_flight) x latency, (billed input - itpm) / (itpm / 60) +
   latency) + reduce: the bucket starts full and refills at itpm/60 a second (as in
   ``ratelimit.py``). ``limited_server_429`` counts the 429s the emulator sent.
3. ``wall_over_ideal_20k``, ``driver_rss_mb_20k``: case 1 with ``--rss-chunks`` (20,000)
   chunks, so cost must grow linearly: its ratio should match case 1's; the driver's resident
   memory is sampled every 50 ms (peak reported): the driver keeps counters, not results.

Wall time runs from the map phase's start (mapper hosts up) to the answer: actor start-up is
not map-reduce's work. Each chunk result is committed to a fresh resume store, as in real runs.

Prints ONE JSON line: ``{"bench": "mapreduce", "wall_over_ideal": ..., ...}``.

Usage: ``python benchmarks/mapreduce.py [--chunks 2000] [--latency 0.2] [--in-flight 50]
[--itpm 240000] [--rss-chunks 20000] [--skip-rss]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import anthropic
from aiolimiter import AsyncLimiter

import cluster
from actors.limits import TierLimits
from cluster.settings import Settings
from emulator import EmulatorProcess, Limits
from topologies import create_session
from topologies.mapreduce import MapReduceTask

NOTE_TOKENS = 16
"""Mapper output cap: small notes, so that every note fits one final reducer call."""
BIG = 1_000_000_000
"""A limit that never binds."""


def _corpus(chunks: int) -> str:
    """``chunks`` records of 114 bytes: 40-token chunks (120 bytes) hold exactly one each."""
    return "\n\n".join(f"Record {i:06d}: the gauge on the old bridge read {i % 14:02d} feet at "
                       "midnight, and the watch rang the church bell in threes."
                       for i in range(chunks))


def _config(in_flight: int, store_dir: str) -> dict[str, Any]:
    return {"chunk_size": 40, "chunk_overlap": 0, "max_parallel_mappers": in_flight,
            "mapper_max_tokens": NOTE_TOKENS, "reduce_budget_tokens": 900_000,
            "store_dir": store_dir}


def _runtime(base: cluster.Runtime, base_url: str) -> cluster.Runtime:
    """The shared runtime, pointed at another emulator (each case has its own)."""
    return dataclasses.replace(base, backend=dataclasses.replace(base.backend,
                                                                 base_url=base_url))


async def _run(runtime: cluster.Runtime, chunks: int, in_flight: int,
               sample_rss: bool = False) -> dict[str, Any]:
    """One map-reduce session; the wall time from the map phase's start to the answer."""
    session = create_session("mapreduce", runtime=runtime,
                             config=_config(in_flight, tempfile.mkdtemp(prefix="mr-bench-")))
    rss = _RssSampler() if sample_rss else None
    started = result = None
    async with session:
        sampler = asyncio.create_task(rss.run()) if rss else None
        async for event in session.run(MapReduceTask(question="What did the gauge read?",
                                                     text=_corpus(chunks))):
            if event.kind == "phase" and event.name == "map":
                started = time.perf_counter()
            elif event.kind == "run_completed":
                result = event.result
        wall = time.perf_counter() - (started or 0.0)
        if sampler:
            sampler.cancel()
    assert result is not None and result.chunks == chunks, "the corpus must cut into --chunks"
    return {"wall_s": wall, "result": result, "rss_peak_mb": rss.peak_mb if rss else None}


class _RssSampler:
    """Peak resident memory of this process, sampled every 50 ms from ``/proc/self/status``."""

    def __init__(self) -> None:
        self.peak_mb = _rss_mb()

    async def run(self) -> None:
        while True:
            self.peak_mb = max(self.peak_mb, _rss_mb())
            await asyncio.sleep(0.05)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _billed_input(stats: dict[str, Any], tier_model: str) -> int:
    billed = stats["billed"].get(tier_model, {})
    return sum(billed.get(f, 0) for f in ("input_tokens", "cache_write_5m", "cache_write_1h"))


async def _plain(base_url: str, chunks: int, in_flight: int) -> tuple[float, float]:
    """The run as the plain asyncio script a user would write instead: one ``AsyncAnthropic``
    on the SDK's aiohttp transport (the agents' own), an ``asyncio.Semaphore`` and an
    ``aiolimiter.AsyncLimiter`` that never binds for the map calls, then the notes in one
    streamed reduce call (as big as the reducer's: the emulator takes longer to answer a
    200 KB prompt, and the ideal counts one latency for it either way). Its map phase's wall
    and the reduce's, from the first map call to the reduce's last event."""
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-ant-bench", max_retries=0,
                                      http_client=anthropic.DefaultAioHttpClient())
    gate, limiter = asyncio.Semaphore(in_flight), AsyncLimiter(10**7, 60)
    records = _corpus(chunks).split("\n\n")

    async def one(record: str) -> str:
        async with gate, limiter:
            reply = await client.messages.create(
                model="claude-haiku-5-5", max_tokens=NOTE_TOKENS,
                messages=[{"role": "user", "content": record}])
        return "".join(b.text for b in reply.content if b.type == "text")

    async with client:
        await asyncio.gather(*(one(r) for r in records[:in_flight]))  # warm-up
        started = time.perf_counter()
        notes = await asyncio.gather(*(one(r) for r in records))
        mapped = time.perf_counter()
        prompt = "Question: What did the gauge read?\n\nNotes:\n\n" + "\n\n".join(
            f"### record {i + 1}\n{note}" for i, note in enumerate(notes))
        async with client.messages.stream(model="claude-sonnet-5-5", max_tokens=2048,
                                          messages=[{"role": "user", "content": prompt}]) as st:
            async for _ in st:
                pass
        return mapped - started, time.perf_counter() - mapped


async def _unlimited(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    waves = math.ceil(args.chunks / args.in_flight)
    with EmulatorProcess(latency_s=args.latency) as emu:
        plain_map, plain_reduce = await _plain(emu.base_url, args.chunks, args.in_flight)
        run = await _run(_runtime(base, emu.base_url), args.chunks, args.in_flight)
    ideal = waves * args.latency + args.latency
    plain = plain_map + plain_reduce
    return {"wall_s": round(run["wall_s"], 2), "ideal_s": round(ideal, 2),
            "wall_over_ideal": round(run["wall_s"] / ideal, 3),
            "plain_wall_over_ideal": round(plain / ideal, 3),
            "plain_map_over_ideal": round(plain_map / (waves * args.latency), 3),
            "plain_reduce_ms": round(plain_reduce * 1000, 1),
            "wall_over_plain": round(run["wall_s"] / plain, 3),
            "combines": run["result"].combines}


async def _limited(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    mapper_model = "claude-haiku-5-5"
    limits = Limits(itpm=args.itpm)
    with EmulatorProcess(latency_s=args.latency, limits_by_tier={"haiku": limits}) as emu:
        await base.limiter.set_limits.remote("haiku", TierLimits(
            rpm=BIG, itpm=args.itpm, otpm=BIG, max_concurrency=10_000))
        try:
            run = await _run(_runtime(base, emu.base_url), args.chunks, args.in_flight)
        finally:
            await base.limiter.set_limits.remote("haiku", _unbound())
        stats = emu.stats()
    billed = _billed_input(stats, mapper_model)
    by_rounds = math.ceil(args.chunks / args.in_flight) * args.latency
    by_bucket = max(0.0, (billed - args.itpm) / (args.itpm / 60)) + args.latency
    ideal = max(by_rounds, by_bucket) + args.latency
    return {"limited_itpm": args.itpm, "limited_billed_input": billed,
            "limited_wall_s": round(run["wall_s"], 2), "limited_ideal_s": round(ideal, 2),
            "limited_wall_over_ideal": round(run["wall_s"] / ideal, 3),
            "limited_server_429": stats["responses_by_status"].get("429", 0)}


async def _rss(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    with EmulatorProcess(latency_s=args.latency) as emu:
        run = await _run(_runtime(base, emu.base_url), args.rss_chunks, args.in_flight,
                         sample_rss=True)
    ideal = math.ceil(args.rss_chunks / args.in_flight) * args.latency + args.latency
    return {"chunks_20k": args.rss_chunks, "wall_s_20k": round(run["wall_s"], 1),
            "ideal_s_20k": round(ideal, 1), "wall_over_ideal_20k": round(run["wall_s"] / ideal, 3),
            "driver_rss_mb_20k": round(run["rss_peak_mb"], 1)}


def _unbound() -> TierLimits:
    return TierLimits(rpm=BIG, itpm=BIG, otpm=BIG, max_concurrency=10_000)


async def _cases(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"bench": "mapreduce", "chunks": args.chunks,
                              "latency_s": args.latency, "in_flight": args.in_flight}
    report |= await _unlimited(base, args)
    report |= await _limited(base, args)
    if not args.skip_rss:
        report |= await _rss(base, args)
    return report


def start_runtime() -> cluster.Runtime:
    """A Ray of our own (2 CPUs) whose limits are far above the load: only a case's own binds.

    ``address="local"``: even if a ``ray start`` cluster is up on this machine.
    """
    settings = Settings(anthropic_base_url="http://127.0.0.1:9", _env_file=None,
                        data_dir=Path(tempfile.mkdtemp(prefix="mr-bench-ledger-")),
                        rpm=BIG, itpm=BIG, otpm=BIG, max_concurrency=10_000)
    return cluster.init(address="local", settings=settings, num_cpus=2, include_dashboard=False,
                        object_store_memory=300 * 1024 * 1024, log_to_driver=False)


def main() -> None:
    """Parse the knobs, run the three cases, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--itpm", type=int, default=240_000)
    parser.add_argument("--rss-chunks", type=int, default=20_000)
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    base = start_runtime()
    try:
        report = asyncio.run(_cases(base, args))
    finally:
        cluster.shutdown()
    report["bench_wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
