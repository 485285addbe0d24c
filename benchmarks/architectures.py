"""The guide's cost-latency matrix for research: all opus, all sonnet, mixed, all haiku.

One research question runs through the research architecture (a lead, ``--researchers``
researchers, a synthesizer) on the emulator's ``realistic`` profile (seconds per call, slower
for bigger tiers), once per configuration:

    all_opus    lead, researchers and synthesizer on opus
    all_sonnet  everything on sonnet
    mixed       sonnet lead and synthesizer, haiku researchers (the default)
    all_haiku   everything on haiku

As in the guide's benchmark, researchers read sources: each has a ``search_corpus`` tool over
the small corpus shipped in ``examples/corpus`` and reads what it returns before it reports,
so the bulk of the tokens is the workers' reading, which the mixed configuration buys cheap.
Latency is the wall time of ``session.query`` (agents spawned beforehand, so actor start-up
is not counted); USD is the Ledger's total for the run. With ``--rounds N`` each configuration
runs N times: ``latency_s``, ``usd``, ``calls`` and the token counts are means per round
(one run of the question), and ``usd_all_rounds`` is what all N rounds cost together.

Prints ONE JSON line:
``{"bench": "architectures", "configs": [{"name", "latency_s", "usd", "usd_all_rounds", ...}],
"mixed_over_all_sonnet_cost": ...}``. Goal: ``mixed_over_all_sonnet_cost`` <= 0.25.

Usage: ``python benchmarks/architectures.py [--researchers 4] [--rounds 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray

import cluster
from cluster.settings import Settings
from emulator import EmulatorProcess
from topologies import create_session

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus"
QUESTION = ("What shaped the town's history: its flood, its industries and the people "
            "who kept it going?")
CONFIGS = {
    "all_opus": {"lead_model": "opus", "subagent_model": "opus"},
    "all_sonnet": {"lead_model": "sonnet", "subagent_model": "sonnet"},
    "mixed": {"lead_model": "sonnet", "subagent_model": "haiku"},
    "all_haiku": {"lead_model": "haiku", "subagent_model": "haiku"},
}


def search_corpus(topic: str) -> str:
    """Search the town archive and return the three most relevant documents."""
    words = {w.lower() for w in re.findall(r"[A-Za-z]{4,}", topic)}
    scored = []
    for path in sorted(CORPUS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        scored.append((-sum(text.lower().count(w) for w in words), path.name, text))
    return "\n\n".join(f"# {name}\n{text}" for _, name, text in sorted(scored)[:3])


async def _one(runtime: Any, name: str, researchers: int) -> dict[str, Any]:
    config = {**CONFIGS[name], "max_parallel_agents": researchers}
    session = create_session("research", config=config, runtime=runtime,
                             tools={"researcher": [search_corpus]})
    async with session:
        # Spawn every agent first: the matrix compares model latency, not actor start-up.
        await asyncio.gather(*(session.crew.agent(k)  # type: ignore[union-attr]
                               for k in session.architecture.all_agent_keys()))
        await asyncio.gather(*(h.flush.remote()
                               for h in session.crew.handles.values()))  # type: ignore[union-attr]
        started = asyncio.get_running_loop().time()
        result = await session.query(QUESTION)
        latency = asyncio.get_running_loop().time() - started
        totals = await session.plugin_context.ledger.totals.remote(session.run_id)
    return {"name": name, "latency_s": round(latency, 2), "usd": totals.cost_usd,
            "calls": totals.calls, "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens, "answer_chars": len(result.output)}


async def _matrix(runtime: Any, researchers: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for name in CONFIGS:
        runs = [await _one(runtime, name, researchers) for _ in range(rounds)]
        latencies = [r["latency_s"] for r in runs]
        spent = sum((r["usd"] for r in runs), Decimal(0))
        rows.append({
            "name": name, "latency_s": round(statistics.mean(latencies), 2),
            "latency_stdev": round(statistics.pstdev(latencies), 2),
            "usd": float(spent / rounds), "usd_all_rounds": float(spent),
            **{k: round(statistics.mean(r[k] for r in runs), 1)
               for k in ("calls", "input_tokens", "output_tokens", "answer_chars")},
            "rounds": rounds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--researchers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    # address="local": a cluster someone started on this box (ray start) is not ours to load.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024 * 1024)
    try:
        with EmulatorProcess(profile="realistic") as emu, \
                tempfile.TemporaryDirectory() as data_dir:
            runtime = cluster.init(settings=Settings(anthropic_base_url=emu.base_url,
                                                     data_dir=Path(data_dir), _env_file=None))
            rows = asyncio.run(_matrix(runtime, args.researchers, args.rounds))
    finally:
        ray.shutdown()
    usd = {r["name"]: Decimal(str(r["usd"])) for r in rows}
    print(json.dumps({
        "bench": "architectures", "architecture": "research", "profile": "realistic",
        "researchers": args.researchers, "configs": rows,
        "mixed_over_all_sonnet_cost": round(float(usd["mixed"] / usd["all_sonnet"]), 4),
    }, default=str))


if __name__ == "__main__":
    main()
