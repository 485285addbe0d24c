"""``raytroupe loadtest ARCH --users N (--duration 60s | --requests M) [--sla-p95 2s]``.

N users, each with a session of its own, send queries back to back; a live table shows
requests, errors, latency percentiles, throughput and cost; the end prints p50/p95/p99,
throughput, errors, cost and, with ``--sla-p95``, the verdict: exit 1 when the SLA is missed.
Offline it runs on the emulator (``RAYTROUPE_EMULATOR_PROFILE=realistic`` for real latencies).

Example:
    raytroupe loadtest pipeline --users 8 --duration 60s --sla-p95 2s
    raytroupe loadtest debate --users 2 --requests 10 --json
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cluster.run_command import Address, Model

_DEFAULT_PROMPT = "Summarise why an actor model suits a fleet of LLM agents, in three points."


def loadtest_command(
    architecture: Annotated[str, typer.Argument(help="research, pipeline, debate, ...")],
    users: Annotated[int, typer.Option("--users", help="Concurrent users (sessions).")] = 4,
    duration: Annotated[str | None, typer.Option(
        "--duration", help="How long to send: 60s, 2m, 500ms.")] = None,
    requests: Annotated[int | None, typer.Option(
        "--requests", help="Or: how many queries in all, shared by the users.")] = None,
    sla_p95: Annotated[str | None, typer.Option(
        "--sla-p95", help="Latency the 95th percentile must stay under (2s); exit 1 if not.",
    )] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="What every query asks.")] =
        _DEFAULT_PROMPT,
    inputs: Annotated[list[str] | None, typer.Option(
        "--input", help="mapreduce: files, folders or globs to read (repeatable).")] = None,
    model: Model = None, address: Address = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    warmup: Annotated[bool, typer.Option(
        "--warmup/--no-warmup", help="Send each user's first query (it spawns the agents) "
        "before the clock starts, uncounted.")] = True,
) -> None:
    """Measure latency, throughput, errors and cost under N concurrent users."""
    from cluster.loadtest import check_plan, parse_duration

    plan = check_plan(
        architecture=architecture, users=users, requests=requests, model=model,
        duration_s=parse_duration(duration, "--duration") if duration else None,
        sla_p95_s=parse_duration(sla_p95, "--sla-p95") if sla_p95 else None,
        task=_task(architecture, prompt, inputs), warmup=warmup,
        # Stored chunk results would turn every query after the first into a free replay.
        config={"resume": False} if architecture == "mapreduce" else {})
    stats = _run(plan, address, live=not json_out)
    if json_out:
        typer.echo(stats.model_dump_json(indent=2))
    else:
        _print_final(stats)
    if stats.sla_met is False:
        raise typer.Exit(1)


def _task(architecture: str, prompt: str, inputs: list[str] | None) -> Any:
    """The query every user sends; checked now, before Ray starts."""
    from actors.errors import ConfigError
    from topologies import get_architecture

    if not prompt.strip():
        raise ConfigError("--prompt is empty")
    cls = get_architecture(architecture)  # UnknownArchitecture names the choices
    if architecture != "mapreduce":
        return prompt
    if not inputs:
        raise ConfigError("loadtest mapreduce needs --input PATH (files, folders or globs)")
    from topologies.mapreduce import MapReduceTask

    task = MapReduceTask(question=prompt, inputs=tuple(inputs))
    cls(None).check_input(task)
    return task


def _run(plan: Any, address: str | None, *, live: bool) -> Any:
    import asyncio

    from rich.console import Console
    from rich.live import Live

    import cluster
    from cluster.loadtest import run_load
    from cluster.ray_messages import send_ray_messages_to_stderr

    send_ray_messages_to_stderr()
    runtime = cluster.init(address=address)
    console = Console(stderr=True)
    try:
        with Live(console=console, auto_refresh=False, transient=True) as screen:
            def tick(stats: Any) -> None:
                if live and console.is_terminal:
                    screen.update(_table(stats, "loadtest (live)"), refresh=True)
            return asyncio.run(run_load(plan, runtime, on_tick=tick))
    finally:
        cluster.shutdown()


def _table(stats: Any, title: str) -> Any:
    """The figures as a two-column table: it fits any terminal."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right", no_wrap=True)
    rows = [("users", str(stats.users)), ("requests", f"{stats.requests:,}"),
            ("in flight", str(stats.in_flight)), ("errors", str(stats.errors)),
            ("latency p50 / p95 / p99 s",
             " / ".join(_s(v) for v in (stats.p50_s, stats.p95_s, stats.p99_s))),
            ("throughput req/s", f"{stats.throughput_rps:.2f}"),
            ("cost USD", f"{stats.cost_usd:.6f}")]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _print_final(stats: Any) -> None:
    from rich.console import Console

    console = Console()
    console.print(_table(stats, f"loadtest: {stats.elapsed_s:.1f} s"))
    if stats.error_kinds:
        console.print("errors: " + ", ".join(f"{n} {kind}" for kind, n in
                                             stats.error_kinds.items()), highlight=False)
    if stats.sla_p95_s is not None:
        verdict = "met" if stats.sla_met else "MISSED"
        console.print(f"SLA p95 <= {stats.sla_p95_s:g} s: {verdict} (p95 {_s(stats.p95_s)} s)",
                      style="green" if stats.sla_met else "bold red", highlight=False)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
