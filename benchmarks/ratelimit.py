"""How close a cluster gets to a binding input-tokens/min limit, from two drivers at once.

An emulator subprocess enforces ``--itpm`` per key; the RateLimiter is given the same limit. Two
driver processes join one Ray, wait at a start line (a named actor) so that they saturate the
limit together, then send ``--calls`` small calls each through two Agent actors. The ideal
wall time follows from the bucket: it starts full (``itpm`` tokens) and refills at ``itpm/60``
per second, so ``ideal_s = (billed input tokens - itpm) / (itpm / 60)``.

Prints ONE JSON line: ``{"bench": "ratelimit", "wall_s", "ideal_s", "wall_over_ideal",
"server_429", ...}``. Goals: ``wall_over_ideal`` <= 1.02 and ``server_429`` == 0.

Usage: ``python benchmarks/ratelimit.py [--itpm 6000] [--calls 180]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

import cluster
from actors.messages import AgentSpec, AskRequest
from cluster.settings import Settings
from cluster.start_line import StartLine
from emulator import EmulatorProcess, Limits

PROMPT = "Summarise: actors own state; messages carry work; limits keep the fleet polite."
NAMESPACE = "bench-ratelimit"


def _settings(base_url: str, itpm: int) -> Settings:
    return Settings(anthropic_base_url=base_url, itpm=itpm, rpm=10**6, otpm=10**8,
                    max_concurrency=256, data_dir=Path(tempfile.gettempdir()) / NAMESPACE,
                    _env_file=None)


def drive(address: str, base_url: str, itpm: int, calls: int, name: str) -> None:
    """One driver: join, spawn two agents, wait at the start line, send ``calls`` calls."""
    runtime = cluster.init(address=address, settings=_settings(base_url, itpm),
                           namespace=NAMESPACE, log_to_driver=False)
    agents = [runtime.spawn(AgentSpec(name=f"bench/{name}/w-{i}", run_id="bench-ratelimit"))
              for i in range(2)]
    ray.get([a.flush.remote() for a in agents])
    ray.get(ray.get_actor("start-line", namespace=NAMESPACE).arrive_and_wait.remote())
    start = time.time()

    async def run() -> None:
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> Any:
            async with gate:
                return await agents[i % 2].ask.remote(
                    AskRequest(prompt=f"{PROMPT} ({name}-{i})", max_tokens=8))

        await asyncio.gather(*(one(i) for i in range(calls)))

    asyncio.run(run())
    print(json.dumps({"start": start, "end": time.time()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--itpm", type=int, default=6000)
    parser.add_argument("--calls", type=int, default=180, help="calls per driver")
    parser.add_argument("--driver", nargs=3, metavar=("ADDRESS", "BASE_URL", "NAME"))
    args = parser.parse_args()
    if args.driver:
        address, base_url, name = args.driver
        drive(address, base_url, args.itpm, args.calls, name)
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with EmulatorProcess(limits=Limits(itpm=args.itpm)) as emu:
            cluster.init(settings=_settings(emu.base_url, args.itpm), namespace=NAMESPACE)
            line = ray.remote(StartLine).options(  # noqa: F841 - alive until the drivers end
                name="start-line", namespace=NAMESPACE, num_cpus=0).remote(2)
            address = ray.get_runtime_context().gcs_address
            root = Path(__file__).resolve().parents[1]
            procs = [subprocess.Popen(
                [sys.executable, __file__, "--itpm", str(args.itpm), "--calls", str(args.calls),
                 "--driver", address, emu.base_url, f"d{d}"],
                cwd=root, stdout=subprocess.PIPE, text=True) for d in range(2)]
            spans = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            stats = emu.stats()
    finally:
        ray.shutdown()
    billed = sum(m["input_tokens"] + m["cache_write_5m"] + m["cache_write_1h"]
                 for m in stats["billed"].values())
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    ideal = (billed - args.itpm) / (args.itpm / 60)
    print(json.dumps({
        "bench": "ratelimit", "itpm": args.itpm, "calls": 2 * args.calls,
        "billed_input_tokens": billed, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
        "wall_over_ideal": round(wall / ideal, 4),
        "ceiling_fraction": round(billed / (args.itpm + args.itpm / 60 * wall), 4),
        "server_429": stats["responses_by_status"].get("429", 0),
    }))


if __name__ == "__main__":
    main()
