"""One limit for the whole cluster: 4 agents in 2 driver processes, zero 429s, the bill exact.

How close the drivers get to the limit's ceiling is a timing figure: ``benchmarks/ratelimit.py``
reports it (``ceiling_fraction``, ``wall_over_ideal``); this test asserts only what cannot
depend on the machine's speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import ray

import cluster
from cluster.settings import Settings
from cluster.start_line import StartLine

ROOT = Path(__file__).resolve().parents[2]
ITPM = 3_000       # 50 input tokens/s after a 3,000-token burst: binds hard on ~25-token calls
CALLS_PER_DRIVER = 76  # even: split over 2 agents


@pytest.mark.slow
def test_two_drivers_share_one_limit_with_no_429_at_the_ceiling(
        ray_session: None, tmp_path: Path) -> None:
    from emulator import EmulatorConfig, Limits, run_emulator

    config = EmulatorConfig(limits=Limits(itpm=ITPM))
    with run_emulator(config) as emu:
        namespace = f"sat-{uuid.uuid4().hex[:6]}"
        settings = Settings(anthropic_base_url=emu.base_url, itpm=ITPM, rpm=100_000,
                            otpm=10_000_000, data_dir=tmp_path, _env_file=None)
        runtime = cluster.init(settings=settings, namespace=namespace)  # the singletons
        start_line = ray.remote(StartLine).options(  # noqa: F841 - kept alive until the end
            name="start-line", namespace=namespace, num_cpus=0).remote(2)
        address = ray.get_runtime_context().gcs_address
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        drivers = [subprocess.Popen(
            [sys.executable, "-m", "tests.actors.saturation_driver", address, namespace,
             emu.base_url, str(ITPM), str(CALLS_PER_DRIVER), str(d)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for d in range(2)]
        for p in drivers:
            p.communicate(timeout=240)
        assert all(p.returncode == 0 for p in drivers)
        stats = emu.stats()
        totals = ray.get(runtime.ledger.totals.remote("saturation"))  # drivers flushed

    assert stats["responses_by_status"].get("429", 0) == 0
    billed_input = sum(m["input_tokens"] + m["cache_write_5m"] + m["cache_write_1h"]
                       for m in stats["billed"].values())
    assert stats["responses_by_status"]["200"] == 2 * CALLS_PER_DRIVER
    assert billed_input > ITPM * 1.2, "the workload must outlast the burst"
    # The Ledger, fed by 4 agents in 2 processes, matches the API's bill to the token and cent.
    assert totals.input_tokens + totals.cache_write_5m + totals.cache_write_1h == billed_input
    assert totals.calls == 2 * CALLS_PER_DRIVER
    assert totals.cost_usd == Decimal(stats["total_cost_usd"])
