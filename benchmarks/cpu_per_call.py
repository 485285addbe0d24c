"""Where the CPU of one map-reduce call goes: microseconds per call, per process, per step.

Runs the unlimited case of ``mapreduce.py`` (``--chunks`` chunks, ``--latency`` seconds per
request, ``--in-flight`` at a time) and reads, for every process of the run (the driver, each
Ray worker, the GCS, the raylet, the emulator), the CPU time it used between the map phase's
start and the answer (``/proc/<pid>/stat``), divided by the calls made. With ``--py-spy DIR``
it also samples the driver, one mapper host, the Ledger and the RateLimiter with ``py-spy
record`` (``--nonblocking``, collapsed stacks in ``DIR``) and splits each process's CPU into
pipeline steps by the frames on the stack (``STEPS``): that is the table in
``docs/performance.md``. py-spy itself costs CPU, so per-process totals come from a run
without it when both are wanted.

Prints ONE JSON line: ``{"bench": "cpu_per_call", "calls", "wall_s", "us_per_call":
{process: us}, "steps": {process: {step: us}}}``.

Usage: ``python benchmarks/cpu_per_call.py [--chunks 2000] [--py-spy /tmp/prof]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from mapreduce import _config, _corpus, _runtime, start_runtime

import cluster
from emulator import EmulatorProcess
from topologies import create_session
from topologies.mapreduce import MapReduceTask

STEPS: dict[str, tuple[str, ...]] = {
    "pydantic (messages)": ("pydantic/", "pydantic_core"),
    "Ray: (de)serialization": ("ray/_private/serialization.py", "cloudpickle", "msgpack"),
    "ledger: journal (sqlite)": ("actors/ledger_journal.py",),
    "ledger: record batch": ("actors/ledger.py", "ledger_metrics.py", "ray/util/metrics"),
    "limiter: grants/settles": ("actors/ratelimiter.py", "limiter_buckets.py", "limits.py"),
    "agent: ledger client + journal": ("ledger_client.py", "record_journal.py"),
    "agent: limiter lease": ("limiter_lease.py", "limiter_stock.py"),
    "agent: HTTP via SDK": ("api_call.py", "anthropic/", "aiohttp/", "yarl/", "httpx"),
    "lane: frames both ends": ("lane_client.py", "lane_server.py", "lane_wire.py"),
    "agent: pipeline steps": ("actors/agent.py", "agent_batch.py", "token_estimate.py"),
    "driver: chunk store": ("chunk_store.py",),
    "driver: reduce tree + events": ("reduce_tree.py", "run_context.py", "session.py",
                                      "channel.py", "plugins.py"),
    "driver: map loop + pool": ("mapreduce_run.py", "mapper_pool.py"),
    "Ray: task submit/execute": ("ray/", "_raylet"),
    "asyncio event loop": ("asyncio/", "selectors.py", "uvloop"),
}
"""A sample's step: walking from the innermost frame out, the first frame whose file matches."""


_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used) of ``pid`` from ``/proc/<pid>/stat``; None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def _label(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    for title in ("Agent", "Ledger", "RateLimiter", "EmulatorActor"):
        if f"ray::{title}" in cmd:
            return title
    for fragment, label in (("emulator", "emulator"), ("gcs_server", "gcs"),
                            ("raylet", "raylet"), ("ray::IDLE", "idle worker")):
        if fragment in cmd:
            return label
    return "ray other"


class _Meter:
    """CPU seconds of this process and every descendant, between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.before: dict[int, float] = {}
        self.used: Counter[str] = Counter()

    def procs(self) -> dict[int, float]:
        """This process and its descendants: pid -> CPU seconds."""
        stats = {int(d.name): _stat(int(d.name)) for d in Path("/proc").iterdir()
                 if d.name.isdigit()}
        mine, grew = {self.pid}, True
        while grew:
            more = {pid for pid, st in stats.items()
                    if st is not None and st[0] in mine and pid not in mine}
            mine |= more
            grew = bool(more)
        return {pid: stats[pid][1] for pid in mine if stats.get(pid) is not None}  # type: ignore[index]

    def start(self) -> None:
        self.before = self.procs()
        self.last = dict(self.before)
        self.labels = {pid: _label(pid) for pid in self.before}

    async def sample(self) -> None:
        """Keep each process's latest reading: hosts are stopped before the run ends."""
        for rounds in itertools.count():
            if rounds % 20 == 0:  # a full scan for new processes every 5 s (it costs CPU)
                for pid in self.procs():
                    self.labels.setdefault(pid, _label(pid))
            for pid in self.labels:
                reading = _stat(pid)
                if reading is not None:
                    self.last[pid] = reading[1]
            await asyncio.sleep(0.25)

    def stop(self) -> None:
        self.last.update(self.procs())
        for pid, cpu in self.last.items():
            label = "driver" if pid == self.pid else self.labels.get(pid) or _label(pid)
            self.used[label] += cpu - self.before.get(pid, 0.0)


def _pids(meter: _Meter) -> dict[str, int]:
    """Pids to sample: the driver, the first mapper host, the Ledger and the RateLimiter."""
    pids = {"driver": meter.pid}
    for pid in sorted(meter.procs()):
        label = _label(pid)
        if label in ("Agent", "Ledger", "RateLimiter"):
            pids.setdefault(label, pid)
    return pids


def _spy(pids: dict[str, int], out: Path, seconds: float) -> list[subprocess.Popen[bytes]]:
    py_spy = Path(sys.executable).parent / "py-spy"  # the venv's, beside its python
    exe = str(py_spy) if py_spy.exists() else "py-spy"
    return [subprocess.Popen([exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250",
                              "--nonblocking", "-f", "raw", "-o", str(out / f"{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


def _step(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        if "tracing_helper.py" in frame:
            # Ray wraps every method of an actor class (ours included) in a tracing shim: a
            # frame around our own code, not Ray's work, so it names no step.
            continue
        for name, fragments in STEPS.items():
            if any(f in frame for f in fragments):
                return name
    return "other"


def _steps(path: Path) -> dict[str, float]:
    """Fractions of a process's samples per step (collapsed stacks: ``frames count``)."""
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[_step(stack)] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


async def _run(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    meter = _Meter()
    spies: list[subprocess.Popen[bytes]] = []
    with EmulatorProcess(latency_s=args.latency) as emu:
        session = create_session("mapreduce", runtime=_runtime(base, emu.base_url),
                                 config=_config(args.in_flight, tempfile.mkdtemp()))
        started, sampler = 0.0, None
        async with session:
            async for event in session.run(MapReduceTask(question="What did the gauge read?",
                                                         text=_corpus(args.chunks))):
                if event.kind == "phase" and event.name == "map":
                    meter.start()
                    sampler = asyncio.create_task(meter.sample())
                    started = time.perf_counter()
                    if args.py_spy:
                        await asyncio.sleep(0.5)  # hosts up and busy
                        spies = _spy(_pids(meter), args.py_spy, args.spy_seconds)
            wall = time.perf_counter() - started
            if sampler is not None:
                sampler.cancel()
            meter.stop()
    for spy in spies:
        spy.wait()
    calls = args.chunks + 1
    report: dict[str, Any] = {
        "bench": "cpu_per_call", "calls": calls, "wall_s": round(wall, 2),
        "us_per_call": {k: round(v / calls * 1e6) for k, v in meter.used.most_common()},
        "us_per_call_total": round(sum(meter.used.values()) / calls * 1e6)}
    if args.py_spy:
        report["steps"] = {}
        for name in ("driver", "Agent", "Ledger", "RateLimiter"):
            path = args.py_spy / f"{name}.txt"
            if path.exists():
                report["steps"][name] = {k: round(v, 3) for k, v in _steps(path).items()}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--py-spy", type=Path, default=None)
    parser.add_argument("--spy-seconds", type=float, default=6.0)
    args = parser.parse_args()
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
    base = start_runtime()
    try:
        report = asyncio.run(_run(base, args))
    finally:
        cluster.shutdown()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
