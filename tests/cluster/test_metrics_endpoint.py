"""Prometheus metrics, read from Ray's metrics endpoint while a run is going, and the shipped
Grafana dashboard checked against the metrics the code defines."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

import cluster
from cluster.settings import Settings
from topologies import create_session
from topologies.mapreduce import MapReduceTask

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "cluster" / "grafana_dashboard.json"
_DEFINED = re.compile(r"(Counter|Histogram|Gauge)\(\s*\"(raytroupe_\w+)\"")


@pytest.fixture(scope="module")
def runtime(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A runtime on a slow emulator (0.25 s a call): the run lasts long enough to watch."""
    from emulator import run_emulator

    with run_emulator(latency_s=0.25) as emu:
        settings = Settings(anthropic_base_url=emu.base_url, _env_file=None,
                            data_dir=tmp_path_factory.mktemp("metrics-ledger"))
        yield cluster.init(settings=settings, namespace=f"m-{uuid.uuid4().hex[:6]}")


def _scrape() -> str:
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n.get("Alive"))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$", re.M)


def _total(body: str, name: str, *labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include every one of ``labels``."""
    return sum(float(value) for metric, tags, value in _SAMPLE.findall(body)
               if metric == name and all(label in tags for label in labels))


def _missing(body: str, run_id: str, limiter_before: float) -> set[str]:
    """What a person watching this run would look for and does not find yet."""
    run = f'run_id="{run_id}"'
    found = {
        "tokens": _total(body, "ray_raytroupe_ledger_tokens_total", run, 'kind="input"'),
        "USD": _total(body, "ray_raytroupe_ledger_cost_usd_total", run),
        "requests by status": _total(body, "ray_raytroupe_ledger_requests_total", run,
                                     'status="ok"'),
        "latency": _total(body, "ray_raytroupe_ledger_latency_s_count", run),
        # The limiter's metrics carry the tier only: count this run's grants as the increase.
        "limiter wait": _total(body, "ray_raytroupe_limiter_wait_s_count", 'tier="haiku"')
        - limiter_before,
    }
    return {name for name, value in found.items() if value <= 0}


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_metrics_endpoint_shows_a_run_while_it_is_going(runtime: Any) -> None:
    config = {"max_parallel_mappers": 2, "mapper_hosts": 2, "chunk_size": 300,
              "resume": False}
    task = MapReduceTask(question="What caused the flood?",
                         inputs=(str(ROOT / "examples" / "corpus"),))
    limiter_before = _total(await asyncio.to_thread(_scrape),
                            "ray_raytroupe_limiter_wait_s_count", 'tier="haiku"')
    async with create_session("mapreduce", runtime=runtime, config=config) as session:
        run = asyncio.create_task(session.query(task))
        missing = {"everything"}
        while missing and not run.done():
            body = await asyncio.to_thread(_scrape)
            missing = _missing(body, session.run_id, limiter_before)
            await asyncio.sleep(0.3)
        still_running = not run.done()
        await run
    assert not missing, f"not on the metrics endpoint during the run: {sorted(missing)}"
    assert still_running, "the run ended before every metric showed up"


def test_the_grafana_dashboard_queries_only_metrics_the_code_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    sources = [ROOT / "actors" / "ledger_metrics.py", ROOT / "actors" / "ratelimiter.py"]
    exported = set()
    for kind, name in _DEFINED.findall("".join(p.read_text() for p in sources)):
        base = f"ray_{name}"
        exported |= ({f"{base}_total"} if kind == "Counter" else
                     {f"{base}_bucket", f"{base}_sum", f"{base}_count"} if kind == "Histogram"
                     else {base})
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"ray_raytroupe_\w+", e)}
    assert used <= exported, sorted(used - exported)
    for family in ("tokens", "cost_usd", "requests", "latency_s", "ttft_s"):
        assert any(f"raytroupe_ledger_{family}" in m for m in used), family
    assert any("raytroupe_limiter_wait_s" in m for m in used)
    assert dashboard["uid"] == "raytroupe-overview" and len(dashboard["panels"]) >= 10
