"""``raytroupe compare CONFIG... --prompts FILE [--score MODULE:FUNC] [--json] [--png FILE]``.

The guide's A/B test and cost-latency matrix: the same prompts through each configuration (a
preset, ``all-haiku`` ``mixed`` ``all-sonnet`` ``all-opus``, or a TOML file: see
:mod:`cluster.compare`), then a table of p50/p95 latency, cost, tokens and quality, the best
quality per dollar marked.

Example:
    raytroupe compare all-haiku mixed all-sonnet --prompts prompts.txt --png matrix.png
    raytroupe compare mixed cheap.toml --prompts prompts.txt --score myscores:quality --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cluster.run_command import Address


def compare_command(
    configs: Annotated[list[str], typer.Argument(
        help="Presets (all-haiku, mixed, all-sonnet, all-opus) or TOML files.")],
    prompts: Annotated[Path, typer.Option("--prompts", help="One prompt per line.")],
    arch: Annotated[str, typer.Option(
        "--arch", help="Architecture of presets and of files that name none.")] = "research",
    score: Annotated[str | None, typer.Option(
        "--score", help="MODULE:FUNC scoring (prompt, answer) -> float. Default: agreement "
        "with the reference configuration's answers.")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", help="The configuration others agree with. Default: the first.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    png: Annotated[Path | None, typer.Option(
        "--png", help="Draw the cost-latency matrix to this PNG.")] = None,
    warmup: Annotated[bool, typer.Option(
        "--warmup/--no-warmup", help="Send the first prompt once, untimed and uncounted, "
        "to spawn each configuration's agents.")] = True,
    address: Address = None,
) -> None:
    """Run the same prompts through each configuration: latency, cost, tokens, quality."""
    import asyncio

    import cluster
    from cluster.compare import compare, load_prompts, load_scorer
    from cluster.ray_messages import send_ray_messages_to_stderr

    checked = _configs(configs, arch, reference)
    questions = load_prompts(prompts)
    scorer = load_scorer(score) if score else None
    if png is not None:
        from cluster.report_command import check_output

        check_output(png, "--png", (".png",))
    send_ray_messages_to_stderr()
    runtime = cluster.init(address=address)
    try:
        rows = asyncio.run(compare(checked, questions, runtime, scorer=scorer,
                                   reference=reference, warmup=warmup,
                                   on_done=_progress(json_out)))
    finally:
        cluster.shutdown()
    if json_out:
        typer.echo("[" + ",\n".join(r.model_dump_json() for r in rows) + "]")
    else:
        _print(rows, reference or checked[0].name, scored=score is not None)
    if png is not None:
        _matrix(rows, png)


def _configs(specs: list[str], arch: str, reference: str | None) -> list[Any]:
    """Load every configuration before anything runs; names must be unique."""
    from actors.errors import ConfigError
    from cluster.compare import load_config
    from topologies import get_architecture

    configs = [load_config(spec, arch) for spec in specs]
    names = [c.name for c in configs]
    if len(set(names)) < len(names):
        raise ConfigError(f"two configurations share a name in {', '.join(names)}: give each "
                          "file its own name = \"...\"")
    if reference is not None and reference not in names:
        raise ConfigError(f"--reference {reference!r} is not one of {', '.join(names)}")
    for config in configs:  # the architecture, its config and models, checked before Ray
        get_architecture(config.architecture)(
            config.config, model=config.model,
            agent_configs={k: {"model": v} for k, v in config.agents.items()})
    return configs


def _progress(quiet: bool) -> Any:
    def done(name: str) -> None:
        if not quiet:
            typer.echo(f"{name}: done", err=True)
    return done


def _print(rows: list[Any], reference: str, scored: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="compare", title_justify="left")
    for name in ("config", "p50 s", "p95 s", "USD", "tokens", "quality", "quality/$", ""):
        table.add_column(name, justify="left" if name == "config" else "right", no_wrap=True)
    for r in rows:
        table.add_row(r.name, _s(r.p50_s), _s(r.p95_s), f"{r.cost_usd:.6f}", f"{r.tokens:,}",
                      f"{r.quality:.2f}",
                      "-" if r.quality_per_usd is None else f"{r.quality_per_usd:,.0f}",
                      "best" if r.best else "")
    console = Console()
    console.print(table)
    what = "your score" if scored else f"agreement with {reference}'s answers (word overlap)"
    console.print(f"quality: {what}; {rows[0].prompts} prompt(s) each", highlight=False)


def _matrix(rows: list[Any], path: Path) -> None:
    """The cost-latency matrix: USD across, p50 latency up, quality in the label."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    for r in rows:
        colour = "#c62828" if r.best else "#1565c0"
        ax.scatter([float(r.cost_usd)], [r.p50_s or 0.0], s=90, color=colour, zorder=3)
        ax.annotate(f"{r.name}\nquality {r.quality:.2f}" + ("  (best per $)" if r.best else ""),
                    (float(r.cost_usd), r.p50_s or 0.0), textcoords="offset points",
                    xytext=(8, 6), fontsize=9)
    ax.set_xlabel("USD over the prompts")
    ax.set_ylabel("p50 latency, s")
    ax.set_title("Cost-latency matrix", loc="left")
    ax.grid(alpha=0.3)
    ax.margins(0.25)
    ax.set_xlim(left=0)
    fig.tight_layout()
    try:
        fig.savefig(path)
    finally:
        plt.close(fig)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
