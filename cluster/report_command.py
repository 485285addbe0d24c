"""``raytroupe report [RUN] [--html FILE] [--png FILE]``: a picture of where time and money went.

Read from the Ledger's journal alone (no Ray needed): a timeline of every attempt per agent,
coloured by how it ended, with the first token marked; attempts in flight over time; cost and
tokens per agent and tier; p50/p95/p99 latency per tier. Without ``--html``/``--png`` it prints
the figures. ``raytroupe run ... --report FILE`` writes the same report when the run ends.

Example:
    raytroupe report --html run.html --png run.png        # the latest run
    raytroupe report mapreduce-76cb78cf --html run.html
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from actors.errors import ConfigError


def report_command(
    run: Annotated[str | None, typer.Argument(
        help="A run id (see `raytroupe ledger`). Default: the latest run.")] = None,
    html: Annotated[Path | None, typer.Option(
        "--html", help="Write one self-contained HTML page (opens offline).")] = None,
    png: Annotated[Path | None, typer.Option("--png", help="Write one PNG image.")] = None,
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", envvar="RAYTROUPE_DATA_DIR",
        help="Directory holding the Ledger journal (ledger.sqlite).")] = Path(".raytroupe"),
) -> None:
    """Timeline, cost and latency of one run, from the Ledger: in the terminal, HTML or PNG."""
    from actors.ledger_journal import JOURNAL_NAME
    from cluster.report_data import load_report

    if html is not None:
        check_output(html, "--html", (".html", ".htm"))
    if png is not None:
        check_output(png, "--png", (".png",))
    report = load_report(data_dir / JOURNAL_NAME, run)
    _print_summary(report)
    for path in (html, png):
        if path is not None:
            _write(report, path)
            typer.echo(f"wrote {path}")


def check_output(path: Path, option: str, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, a file we could not write or would write in the wrong format.

    Raises:
        ConfigError: wrong suffix, missing folder, a folder given, or no write permission.
    """
    if path.suffix.lower() not in suffixes:
        raise ConfigError(f"{option} {str(path)!r}: the file name must end in "
                          f"{' or '.join(suffixes)}")
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a folder; give a file name")
    if not folder.is_dir():
        raise ConfigError(f"{option} {str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{option} {str(path)!r} is not writable")


def write_report(journal: Path, run_id: str, path: Path) -> None:
    """Write run ``run_id``'s report to ``path`` (.html or .png), read from ``journal``."""
    from cluster.report_data import load_report

    _write(load_report(journal, run_id), path)


def _write(report: object, path: Path) -> None:
    from cluster.report_data import RunReport

    assert isinstance(report, RunReport)
    try:
        if path.suffix.lower() == ".png":
            from cluster.report_png import write_png

            write_png(report, path)
        else:
            from cluster.report_html import render_html

            path.write_text(render_html(report), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _print_summary(report: object) -> None:
    """The report's figures as text: the run, latency per tier, the costliest agents."""
    from rich.console import Console
    from rich.table import Table

    from cluster.report_data import RunReport

    assert isinstance(report, RunReport)
    console, totals = Console(), report.totals
    console.print(f"[bold]run[/] {report.run_id} ({report.topology}): "
                  f"{report.duration_s:.2f} s, ${totals.cost_usd:.6f}, {totals.calls} calls, "
                  f"{totals.attempts} attempts, peak {report.peak_in_flight} in flight",
                  highlight=False, soft_wrap=True)
    counts: dict[str, int] = {}
    for attempt in report.attempts:
        counts[attempt.status] = counts.get(attempt.status, 0) + 1
    console.print("attempts: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
                  highlight=False)
    table = Table(title="Latency per tier (s)", title_justify="left")
    for name in ("tier", "attempts", "p50", "p95", "p99", "USD"):
        table.add_column(name, justify="left" if name == "tier" else "right", no_wrap=True)
    cost = {row.key: row.cost_usd for row in report.by_tier}
    for tier in report.latency:
        table.add_row(tier.tier, str(tier.attempts),
                      *(f"{v:.3f}" if v is not None else "-" for v in (tier.p50, tier.p95,
                                                                        tier.p99)),
                      f"{cost.get(tier.tier, 0):.6f}")
    console.print(table)
