"""``raytroupe status``: what the runtime that is up is doing, at a glance.

It joins the runtime (never starts one) and shows the singletons and the warm Agent hosts with
their processes, the limits per tier and what each bucket has left, the calls in flight,
today's spend from the Ledger's journal, and the jobs connected now.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table

from cluster.discovery import attached

_RUNTIME_ACTORS = ("RateLimiter", "Ledger", "EmulatorServer", "AgentHost")
"""What the runtime keeps running for every job: the singletons and the warm Agent hosts."""


def status() -> None:
    """Show the runtime: its actors, limits, calls in flight, today's spend, jobs."""

    from cluster import runtime_info
    from cluster.discovery import NAMESPACE

    with attached(NAMESPACE) as address:
        info = runtime_info.read(NAMESPACE)
        console = Console()
        console.print(f"runtime at [bold]{address}[/] (namespace {NAMESPACE}"
                      f"{', raytroupe ' + info.version if info else ''}"
                      f"{', started by ' + info.owner if info else ''})", highlight=False)
        console.print(_actors_table(address))
        console.print(_limits_table(info))
        if info is not None:
            console.print(f"spent today: [bold]${_spent_today(info.data_dir)}[/] "
                          f"(Ledger journal in {info.data_dir})", highlight=False)
        jobs = _jobs(address)
        console.print(f"jobs connected: {len(jobs)}" + "".join(f"\n  {j}" for j in jobs),
                      highlight=False)


def _actors_table(address: str) -> Table:
    from ray.util.state import list_actors

    from cluster.discovery import NAMESPACE

    table = Table(title="Runtime actors (singletons, warm Agent hosts)", title_justify="left")
    for column in ("actor", "name", "state", "pid", "restarts"):
        table.add_column(column)
    actors = [a for a in list_actors(address=address, detail=True, limit=10_000)
              if a.ray_namespace == NAMESPACE and a.class_name in _RUNTIME_ACTORS]
    for actor in sorted(actors, key=lambda a: (_RUNTIME_ACTORS.index(a.class_name),
                                               a.state != "ALIVE", a.name or "")):
        table.add_row(actor.class_name, actor.name or "", actor.state, str(actor.pid or ""),
                      str(actor.num_restarts))
    return table


def _limits_table(info: Any) -> Table:
    """Limits per tier, and per live bucket what is left and in flight (from the limiter)."""
    import ray

    from actors.singletons import lookup
    from cluster.discovery import NAMESPACE

    table = Table(title="Limits per tier (per minute) and calls in flight", title_justify="left")
    for column in ("tier", "account", "rpm", "itpm", "otpm", "concurrency", "in flight",
                   "waiting", "itpm left"):
        table.add_column(column, justify="right")
    limiter_status = ray.get(lookup("rate_limiter", NAMESPACE).status.remote(), timeout=30)
    for bucket in limiter_status.buckets:
        limits = bucket.limits
        table.add_row(bucket.key.tier, bucket.key.account, f"{limits.rpm:,}", f"{limits.itpm:,}",
                      f"{limits.otpm:,}", f"{limits.max_concurrency:,}", str(bucket.in_use),
                      str(bucket.waiting), f"{int(bucket.available.input_tokens):,}")
    if info is not None:
        shown = {b.key.tier for b in limiter_status.buckets}
        for tier, limits in sorted({**dict.fromkeys(("haiku", "sonnet", "opus"), info.limits),
                                    **info.per_tier}.items()):
            if tier not in shown:
                table.add_row(tier, "-", f"{limits.rpm:,}", f"{limits.itpm:,}",
                              f"{limits.otpm:,}", f"{limits.max_concurrency:,}", "0", "0", "-")
    return table


def _spent_today(data_dir: str) -> Decimal:
    """USD billed since local midnight, from the Ledger's journal (read-only)."""
    from pathlib import Path

    from actors.ledger_journal import JOURNAL_NAME, iter_rollup_rows
    from actors.ledger_rollup import rollup

    midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
    try:
        rows = [r for r in iter_rollup_rows(Path(data_dir) / JOURNAL_NAME, None, "run")
                if r.started_at >= midnight]
    except FileNotFoundError:
        return Decimal(0)
    return sum((r.cost_usd for r in rollup(rows, "run")), Decimal(0)).quantize(Decimal("0.0001"))


def _jobs(address: str) -> list[str]:
    """Jobs running now, but this one (``status`` is itself a driver for a moment)."""
    import ray
    from ray.util.state import list_jobs

    mine = ray.get_runtime_context().get_job_id()
    jobs = []
    for job in list_jobs(address=address, limit=10_000):
        if job.status != "RUNNING" or job.job_id == mine:
            continue
        jobs.append(f"{job.job_id or '-'} {job.submission_id or ''} "
                    f"{(job.entrypoint or '')[:60]}".strip())
    return jobs
