"""Three jobs at once on one long-lived runtime and one key: do they share the limit, fairly?

A local runtime (``raytroupe up``, private ``RAY_TMPDIR``, free ports) and an emulator
subprocess whose input-tokens/min limit on the mappers' tier binds (the runtime's limiter is
given the same number). Three driver processes start together, two as plain processes and one
through real ``ray job submit``; each maps its part of a ``--chunks`` corpus on one key (two
take 45 % each, one 10 %: it finishes much earlier, and its end must not take the others'
limiter or Ledger with it). A start line (a named actor) releases them at once; the short job
then starts once both big ones have mapped a chunk (a second line): it joins a limit that
already binds, the case fairness is about. (Released together, whichever job had its mapper
hosts up first took the full bucket, and a short job that was first could finish inside that
burst, leaving no time with all three running to measure a share in.)

Prints ONE JSON line:

* ``jobs``, ``correct_jobs``: jobs started / jobs whose every chunk was mapped and answered.
* ``server_429``: 429s the emulator sent (goal 0).
* ``ceiling_fraction``: billed mapper input tokens over what the API admits while the mappers
  send: its full bucket at the start plus the refill, from the first mapper request to the
  last mapper answer (goal >= 0.97). ``map_s`` is that span, ``ideal_map_s`` the least the
  API needs for the same tokens; ``startup_s`` (first job's map phase to first mapper request)
  and ``tail_s`` (last mapper answer to last job's end: its reduce, on another tier) are reported
  apart. ``refill_fraction_job_wall`` is the old ``ceiling_fraction``: billed beyond one
  bucket over the refill from the first map phase to the last job's end.
* ``binding_fraction``: billed mapper input over the refill, by answer time, from 10 s after
  the first answer to the last: how much of a binding limit is used once the burst is spent.
* ``min_share_while_all_ran``: while all three jobs ran, the smallest job's share of the
  mapper input tokens answered in that window (fair = 0.333; goal >= 0.25).
* ``ledger_equals_bill``: the one Ledger's USD equals the emulator's bill.

Usage: ``python benchmarks/jobs.py [--chunks 2000] [--itpm 120000] [--in-flight 32]``
(``--driver`` is the mode each job runs in).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve()
SHARES = (0.45, 0.45, 0.10)
NOTE_TOKENS = 16
START_LINE_TIMEOUT_S = 600.0
"""A job whose siblings never arrive (one failed to start) gives up instead of waiting on."""
BURST_S = 10.0
"""``binding_fraction`` starts this long after the first answer: the full bucket is spent."""
SMALL_JOB = "job2"
"""The short job (``ray job submit``): it starts once both big jobs have mapped a chunk."""


def _corpus(chunks: int, job: str) -> str:
    """``chunks`` records that cut into exactly one 40-token chunk each."""
    return "\n\n".join(f"Log {job}-{i:06d}: the tide gauge at the north pier showed {i % 9} "
                       "metres, and the harbour master noted it in the ledger." for i in
                       range(chunks))


def driver(job: str, chunks: int, in_flight: int) -> None:
    """One job: join the runtime, wait at the start line, map-reduce, print a JSON line."""
    import asyncio

    import ray

    import cluster
    from cluster.start_line import StartLine
    from topologies import create_session
    from topologies.mapreduce import MapReduceTask

    runtime = cluster.init()
    line, mapping = (ray.remote(StartLine).options(name=name, get_if_exists=True,
                                                   lifetime="detached", num_cpus=0).remote(n)
                     for name, n in (("jobs-start-line", 3), ("jobs-big-mapping", 3)))
    arrived: list[Any] = []

    async def run() -> dict[str, Any]:
        session = create_session("mapreduce", runtime=runtime, config={
            "chunk_size": 40, "chunk_overlap": 0, "max_parallel_mappers": in_flight,
            "mapper_max_tokens": NOTE_TOKENS, "reduce_budget_tokens": 900_000,
            "store_dir": tempfile.mkdtemp(prefix=f"jobs-{job}-")})
        result, started = None, None
        async with session:
            await asyncio.wait_for(line.arrive_and_wait.remote(), START_LINE_TIMEOUT_S)
            if job == SMALL_JOB:
                await asyncio.wait_for(mapping.arrive_and_wait.remote(), START_LINE_TIMEOUT_S)
            async for event in session.run(MapReduceTask(question="What did the gauge show?",
                                                         text=_corpus(chunks, job))):
                if event.kind == "phase" and event.name == "map" and started is None:
                    started = time.time()
                elif event.kind == "agent_completed" and not arrived and job != SMALL_JOB:
                    # Our first chunk is mapped: calls flow. (The reference is never awaited.)
                    arrived.append(mapping.arrive_and_wait.remote())
                elif event.kind == "run_completed":
                    result = event.result
        return {"job": job, "run_id": session.run_id, "started": started, "ended": time.time(),
                "chunks": getattr(result, "chunks", None),
                "mapped": getattr(result, "chunks_mapped", None),
                "answer": bool(result and result.output.strip())}

    print("JOB " + json.dumps({**asyncio.run(run()), "expected": chunks,
                               "joined": runtime.joined}), flush=True)
    cluster.shutdown()




def _jobs(outputs: list[str]) -> list[dict[str, Any]]:
    found = []
    for output in outputs:
        for line in output.splitlines():
            if line.startswith("JOB "):
                found.append(json.loads(line[4:]))
    return found


def _figures(jobs: list[dict[str, Any]], stats: dict[str, Any], journal: Path,
             itpm: int) -> dict[str, Any]:
    from actors.ledger_journal import iter_rollup_rows

    rows = list(iter_rollup_rows(journal, None, "run"))
    ran = [j for j in jobs if j.get("started")]
    first, last = min(j["started"] for j in ran), max(j["ended"] for j in ran)
    together = (max(j["started"] for j in ran), min(j["ended"] for j in ran))
    per_job = {j["run_id"]: 0 for j in ran}
    for r in rows:  # by answer time: an attempt's start is stamped before its permit wait
        if r.key in per_job and "haiku" in r.model and r.http_status == 200 and \
                together[0] <= r.started_at + (r.latency_s or 0.0) <= together[1]:
            per_job[r.key] += r.input_tokens
    total = sum(per_job.values())
    ledger_usd = sum((Decimal(r.cost_usd) for r in rows), Decimal(0))
    return {
        "server_429": stats["responses_by_status"].get("429", 0),
        **_ceiling(rows, itpm, first, last),
        "binding_fraction": _binding_fraction(rows, itpm),
        "min_share_while_all_ran": round(min(per_job.values()) / total, 3) if total else None,
        "all_ran_s": round(together[1] - together[0], 1),
        "ledger_equals_bill": ledger_usd == Decimal(stats["total_cost_usd"]),
        "wall_s": round(last - first, 1),
    }


def _ceiling(rows: list[Any], itpm: int, first: float, last: float) -> dict[str, Any]:
    """How much of what the API admits the mappers used, while they were sending.

    The API's bucket starts full (``itpm``) and refills at ``itpm / 60`` a second, so over a
    span of ``s`` seconds it admits ``itpm + itpm / 60 * s``. The span is the map: from the
    first mapper attempt's start (taken before its permit; the bucket is full, so that is when
    it is sent) to the last mapper answer. The jobs' time before it (mapper hosts starting)
    and after it (the reduce, on another tier) are ``startup_s`` and ``tail_s``:
    no mapper call can use the limit then. ``refill_fraction_job_wall`` is the figure this
    benchmark called ``ceiling_fraction`` before: billed input beyond one bucket over the
    refill from the first job's map phase to the last job's end (both included)."""
    mapped = [r for r in rows if "haiku" in r.model and r.http_status == 200]
    if not mapped:
        return {}
    billed = sum(r.input_tokens + r.cache_write_5m + r.cache_write_1h for r in mapped)
    start = min(r.started_at for r in mapped)
    end = max(r.started_at + (r.latency_s or 0.0) for r in mapped)
    rate = itpm / 60
    return {
        "ceiling_fraction": round(billed / (itpm + rate * (end - start)), 3),
        "map_s": round(end - start, 1),
        "ideal_map_s": round(max(0.0, billed - itpm) / rate, 1),
        "startup_s": round(start - first, 1),
        "tail_s": round(last - end, 1),
        "refill_fraction_job_wall": round(max(0, billed - itpm) / (rate * (last - first)), 3),
    }


def _binding_fraction(rows: list[Any], itpm: int) -> float | None:
    """Mapper input billed over the refill, by answer time, from ``BURST_S`` after the first
    answer to the last: the limit's use once the burst is spent, with no start-up or reduce
    at either end (``ceiling_fraction`` counts the burst too)."""
    answers = [(r.started_at + (r.latency_s or 0.0), r.input_tokens) for r in rows
               if "haiku" in r.model and r.http_status == 200]
    if not answers:
        return None
    start, end = min(t for t, _ in answers) + BURST_S, max(t for t, _ in answers)
    inside = sum(n for t, n in answers if start < t <= end)
    return round(inside / (itpm / 60 * (end - start)), 3) if end > start else None


def bench(args: argparse.Namespace) -> dict[str, Any]:
    from emulator import EmulatorProcess, Limits

    # /tmp, not $TMPDIR: Ray's socket paths under RAY_TMPDIR must stay short.
    temp = tempfile.mkdtemp(prefix="rt-jb-", dir="/tmp")  # nosec B108
    data = Path(temp) / "data"
    with EmulatorProcess(latency_s=args.latency,
                         limits_by_tier={"haiku": Limits(itpm=args.itpm)}) as emu:
        env = {**os.environ, "RAY_TMPDIR": temp, "ANTHROPIC_BASE_URL": emu.base_url,
               "RAYTROUPE_ITPM": str(args.itpm), "RAYTROUPE_RPM": "1000000",
               "RAYTROUPE_OTPM": "100000000", "RAYTROUPE_MAX_CONCURRENCY": "10000",
               "RAYTROUPE_DATA_DIR": str(data), "PYTHONPATH": str(HERE.parents[1])}
        env.pop("RAY_ADDRESS", None)
        up = subprocess.run([str(BIN / "raytroupe"), "up", "--port=0", "--dashboard-port=0"],
                            env=env, check=False, capture_output=True, text=True, timeout=300)
        if up.returncode != 0:
            raise SystemExit(f"raytroupe up failed ({up.returncode}): {up.stderr[-2000:]}")
        record = json.loads((Path(temp) / "ray" / "raytroupe-up.json").read_text())
        try:
            sizes = [max(1, round(args.chunks * share)) for share in SHARES]
            me = [sys.executable, str(HERE), "--driver"]
            procs = [subprocess.Popen([*me, f"job{i}", str(n), str(args.in_flight)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for i, n in enumerate(sizes[:2])]
            procs.append(subprocess.Popen(
                [str(BIN / "ray"), "job", "submit", "--address",
                 record["dashboard_url"], "--", *me, "job2", str(sizes[2]),
                 str(args.in_flight)], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True))
            outputs = [p.communicate(timeout=3600) for p in procs]
        finally:
            subprocess.run([str(BIN / "raytroupe"), "down"], env=env, check=False,
                           capture_output=True, timeout=120)
        stats = emu.stats()
    jobs = _jobs([out for out, _ in outputs])
    correct = sum(1 for j in jobs if j["mapped"] == j["expected"] == j["chunks"] and j["answer"])
    if len(jobs) < 3:
        sys.stderr.write("\n".join(err[-2000:] for _, err in outputs))
    return {"bench": "jobs", "chunks": args.chunks, "itpm": args.itpm, "jobs": 3,
            "correct_jobs": correct, "joined_jobs": sum(1 for j in jobs if j["joined"]),
            **(_figures(jobs, stats, data / "ledger.sqlite", args.itpm) if jobs else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2_000)
    parser.add_argument("--itpm", type=int, default=120_000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--driver", nargs=3, metavar=("JOB", "CHUNKS", "IN_FLIGHT"))
    args = parser.parse_args()
    if args.driver:
        driver(args.driver[0], int(args.driver[1]), int(args.driver[2]))
        return
    print(json.dumps(bench(args)))


if __name__ == "__main__":
    main()
