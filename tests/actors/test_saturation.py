"""One limit for the whole cluster: 4 agents in 2 driver processes, zero 429s, full speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
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
        cluster.init(settings=settings, namespace=namespace)   # creates the singletons
        start_line = ray.remote(StartLine).options(  # noqa: F841 - kept alive until the end
            name="start-line", namespace=namespace, num_cpus=0).remote(2)
        address = ray.get_runtime_context().gcs_address
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        drivers = [subprocess.Popen(
            [sys.executable, "-m", "tests.actors.saturation_driver", address, namespace,
             emu.base_url, str(ITPM), str(CALLS_PER_DRIVER), str(d)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for d in range(2)]
        outputs = [json.loads(p.communicate(timeout=240)[0].strip().splitlines()[-1])
                   for p in drivers]
        assert all(p.returncode == 0 for p in drivers)
        stats = emu.stats()

    assert stats["responses_by_status"].get("429", 0) == 0
    billed_input = sum(m["input_tokens"] + m["cache_write_5m"] + m["cache_write_1h"]
                       for m in stats["billed"].values())
    assert stats["responses_by_status"]["200"] == 2 * CALLS_PER_DRIVER
    # Both drivers start together (StartLine). The most the API admits in a span of t seconds
    # from a full bucket is its capacity plus the refill: ITPM + ITPM/60 * t tokens. That
    # ceiling is what "full speed" means; the run must use at least 95 % of it, and the span
    # must be long enough that the refill, not the burst, is what binds.
    span_s = max(o["end"] for o in outputs) - min(o["start"] for o in outputs)
    ceiling = ITPM + ITPM / 60 * span_s
    print(f"saturation: {billed_input} tokens in {span_s:.2f}s, ceiling {ceiling:.0f}, "
          f"{billed_input / ceiling:.3f} of it")
    assert billed_input > ITPM * 1.2, "the workload must outlast the burst"
    assert billed_input >= 0.95 * ceiling
