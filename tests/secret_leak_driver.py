"""A real CLI run with a canary key, under ``ANTHROPIC_LOG=debug`` and object-store pressure.

Run by ``tests/test_secret_surfaces.py`` as ``python -m tests.secret_leak_driver WORK`` with
the canary in ``ANTHROPIC_API_KEY``. It starts its own small Ray (an 80 MB object store that
spills to ``WORK/spill``), runs ``raytroupe run pipeline`` through the console-script entry
against a loopback emulator, then puts 200 MB through the store so that what it holds is
spilled, and reads the node's ``/metrics``. Spilled files are gone once Ray stops, so they are
searched here; the findings go to ``WORK/surfaces.json``. This process's stdout and stderr (the
CLI's output and every worker log line Ray streams back) are left for the test to search.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import ray

_MB = 1024 * 1024


def _spilled(spill: Path, canary: bytes) -> dict[str, object]:
    files = [p for p in spill.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "with_canary": [str(p) for p in files if canary in p.read_bytes()]}


def _metrics() -> str:
    port = ray._private.worker._global_node.metrics_export_port
    time.sleep(1.5)  # a driver script, not an actor: let the agents report once more
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        return page.read().decode()


def main(work: Path) -> None:
    from cluster.cli import main as raytroupe
    from emulator import run_emulator

    spill = work / "spill"
    ray.init(address="local", num_cpus=2, object_store_memory=80 * _MB, namespace="leak",
             include_dashboard=False, _system_config={
                 "object_spilling_config": json.dumps(
                     {"type": "filesystem", "params": {"directory_path": str(spill)}}),
                 "metrics_report_interval_ms": 500})
    with run_emulator() as emu:
        os.environ.update(ANTHROPIC_BASE_URL=emu.base_url, RAYTROUPE_DATA_DIR=str(work / "data"))
        sys.argv = ["raytroupe", "run", "pipeline", "Say hello.", "--stage", "write"]
        try:
            raytroupe()
        except SystemExit as exc:
            code = exc.code
        held = [ray.put(bytes(25 * _MB)) for _ in range(8)]  # 200 MB through 80: spills
        surfaces = {"cli_exit": code, "requests": emu.stats()["requests"],
                    "spill": _spilled(spill, os.environ["ANTHROPIC_API_KEY"].encode()),
                    "metrics": _metrics()}
        del held
    (work / "surfaces.json").write_text(json.dumps(surfaces))
    ray.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
