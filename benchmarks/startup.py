"""Start-up: how long from launching a command to its first API call, cold and with ``up``.

Prints one JSON line:

* ``help_s``: ``raytroupe --help`` from launch to exit (the median of five launches per run);
  ``help_cpu_s``: the CPU time it used (user + system), which a loaded machine does not
  inflate.
* ``cold_first_call_s``: ``raytroupe run research "q"`` with nothing up (it starts a private
  Ray), from launch to the emulator receiving its first request.
* ``warm_first_call_s``: the same with ``raytroupe up`` running (the run joins it and its
  agents live on the runtime's warm Agent hosts); ``first_after_up_s``: the first such run
  after ``up`` (the median leaves it out).
* ``sdk_first_call_s``: a bare ``AsyncAnthropic`` script's first request, the floor that the
  others are compared with (``warm_over_sdk``).
* ``cold_cpu_s``, ``warm_cpu_s``, ``sdk_cpu_s``: CPU seconds of each process from launch to
  exit (the cold run with the private Ray it started and reaped; not the joined runtime's
  workers): what a loaded machine does not inflate; ``warm_cpu_over_sdk`` compares them.
* ``up_s``: how long ``raytroupe up`` took (paid once per machine, not per run).

Everything runs in a private ``RAY_TMPDIR`` on free ports, against an emulator in this process
(the first request is seen by polling its ``/_emulator/stats`` every 10 ms), and what ``up``
started is stopped with ``raytroupe down``. On a loaded 2-core machine expect ±30 %.

Usage:
    .venv/bin/python benchmarks/startup.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from emulator import run_emulator

BIN = Path(sys.executable).parent
HELP_LAUNCHES = 5
"""``--help`` launches per run: one 0.2 s launch is at the mercy of a neighbour's burst (a
single one read 1.2 s on a box whose load average said 1), the median of five is not."""
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_SDK_SCRIPT = """
import asyncio, sys
from anthropic import AsyncAnthropic
async def main():
    client = AsyncAnthropic(base_url=sys.argv[1], api_key="sk-ant-bench", max_retries=0)
    await client.messages.create(model="claude-haiku-5-5", max_tokens=20,
                                 messages=[{"role": "user", "content": "q"}])
asyncio.run(main())
"""


def _requests(base_url: str) -> int:
    with _OPENER.open(base_url + "/_emulator/stats", timeout=5) as response:
        return int(json.loads(response.read())["requests"])


def _children_cpu_s() -> float:
    """CPU seconds used by finished child processes: ``--help``'s cost whatever the load."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _first_call_s(args: list[str], env: dict[str, str], base_url: str) -> tuple[float, float]:
    """Seconds from launching ``args`` to the emulator's next request, and the CPU seconds the
    process (with what it started and reaped: a private Ray) used until it exited."""
    seen, cpu = _requests(base_url), _children_cpu_s()
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:  # its stderr, read only if the run fails
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        first = None
        while process.poll() is None or first is None:
            if first is None and _requests(base_url) > seen:
                first = time.perf_counter() - started
            if process.poll() is not None and first is None:
                log.seek(0)
                raise RuntimeError(f"{args[:3]} exited with {process.returncode} before any "
                                   f"call: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.01)
        process.wait(timeout=600)
    return first, _children_cpu_s() - cpu


def _add(figures: dict[str, list[float]], kind: str, measured: tuple[float, float]) -> None:
    figures[f"{kind}_first_call_s"].append(measured[0])
    figures[f"{kind}_cpu_s"].append(measured[1])


def measure(runs: int) -> dict[str, Any]:
    # /tmp, not $TMPDIR: Ray's socket paths under RAY_TMPDIR must stay short.
    temp = tempfile.mkdtemp(prefix="rt-bs-", dir="/tmp")  # nosec B108
    with run_emulator(latency_s=0.0) as emu:
        env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled",
               "ANTHROPIC_BASE_URL": emu.base_url, "RAYTROUPE_DATA_DIR": f"{temp}/data",
               "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        run = [str(BIN / "raytroupe"), "run", "research", "q", "-q"]
        figures: dict[str, list[float]] = {k: [] for k in ("help_s", "help_cpu_s",
                                                           "sdk_first_call_s",
                                                           "cold_first_call_s",
                                                           "warm_first_call_s", "cold_cpu_s",
                                                           "warm_cpu_s", "sdk_cpu_s")}
        for _ in range(runs):
            for _ in range(HELP_LAUNCHES):
                started, cpu = time.perf_counter(), _children_cpu_s()
                subprocess.run([str(BIN / "raytroupe"), "--help"], env=env, check=True,
                               capture_output=True)
                figures["help_s"].append(time.perf_counter() - started)
                figures["help_cpu_s"].append(_children_cpu_s() - cpu)
            _add(figures, "sdk", _first_call_s(
                [sys.executable, "-c", _SDK_SCRIPT, emu.base_url], env, emu.base_url))
            _add(figures, "cold", _first_call_s(run, env, emu.base_url))
        started = time.perf_counter()
        up = subprocess.run([str(BIN / "raytroupe"), "up", "--port=0", "--dashboard-port=0"],
                            env=env, check=False, capture_output=True, text=True, timeout=300)
        up_s = time.perf_counter() - started
        try:
            if up.returncode != 0:
                raise RuntimeError(f"raytroupe up failed: {(up.stdout + up.stderr)[-2000:]}")
            first_after_up, _ = _first_call_s(run, env, emu.base_url)
            for _ in range(runs):
                _add(figures, "warm", _first_call_s(run, env, emu.base_url))
        finally:
            subprocess.run([str(BIN / "raytroupe"), "down"], env=env, check=False,
                           capture_output=True, timeout=120)
    result: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    result["up_s"] = round(up_s, 2)
    result["first_after_up_s"] = round(first_after_up, 3)
    result["warm_over_sdk"] = round(result["warm_first_call_s"] / result["sdk_first_call_s"], 2)
    result["cold_over_sdk"] = round(result["cold_first_call_s"] / result["sdk_first_call_s"], 2)
    result["warm_cpu_over_sdk"] = round(result["warm_cpu_s"] / result["sdk_cpu_s"], 2)
    result["load_avg_1m"] = round(os.getloadavg()[0], 1)
    result["runs"] = runs
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=1, help="Medians over this many launches.")
    print(json.dumps({"benchmark": "startup", **measure(parser.parse_args().runs)}))


if __name__ == "__main__":
    main()
