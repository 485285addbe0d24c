"""``raytroupe ledger [RUN]``: what each run, agent, tier, topology or model cost.

Reads the Ledger's journal file directly (read-only), so it works without Ray, during a run or
long after, on the machine that holds ``--data-dir`` (the head node's).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from actors.errors import RaytroupeError
from actors.ledger_journal import JOURNAL_NAME, check_data_dir, read_run_ids
from actors.ledger_rollup import Rollup, RollupBy, empty_rollup, read_rollups

_MICRO_USD = Decimal("0.000001")


def ledger_command(
    run: Annotated[str | None, typer.Argument(
        help="A run id: show its totals and roll-up. Omit it to list every run.")] = None,
    data_dir: Annotated[Path, typer.Option(
        "--data-dir", envvar="RAYTROUPE_DATA_DIR",
        help="Directory holding the Ledger journal (ledger.sqlite).")] = Path(".raytroupe"),
    by: Annotated[RollupBy | None, typer.Option(
        "--by", help="Roll up by agent, tier, topology or model (default: agent for a run).",
    )] = None,
) -> None:
    """Show tokens, USD, calls, errors, 429s, retries and latency percentiles from the Ledger."""
    check_data_dir(data_dir)  # a file there, or a damaged journal: one line naming it
    path = data_dir / JOURNAL_NAME
    try:
        known = read_run_ids(path)
    except FileNotFoundError:
        _fail(f"no Ledger journal at {path}: run something first, or pass --data-dir")
    if run is not None and run not in known:
        choices = ", ".join(known[:10]) or "none yet"
        _fail(f"run {run!r} is not in the Ledger at {path} (runs: {choices})")
    console = Console()
    if run is None:
        runs = read_rollups(path, None, "run")
        if not runs:
            console.print(f"No calls recorded yet in {path}.")
            return
        _print(console, "Runs", runs, total=None)
        if by is not None and by != "run":
            _print(console, f"All runs by {by}", read_rollups(path, None, by), total=None)
        return
    by = by or "agent"
    totals = read_rollups(path, run, "run") or [empty_rollup("run", run)]
    _print(console, f"Run {run} by {by}", read_rollups(path, run, by), total=totals[0])


def _fail(message: str) -> NoReturn:
    """One clear line on stderr and exit code 1 (from the CLI's one error boundary)."""
    raise RaytroupeError(message)


_COLUMNS = ("calls", "attempts", "errors", "429s", "retries", "input", "output", "cache write",
            "cache read", "USD", "p50 s", "p95 s", "p99 s", "cache hits", "saved USD",
            "read %", "maybe billed", "maybe USD")
"""``cache hits``/``saved USD``: the response cache; ``read %``: input read from the prompt
cache (``Rollup.prompt_cache_hit_rate``); ``maybe billed``/``maybe USD``: attempts sent that
got no answer, at their reservation, not in ``USD`` (the bill lies between the two sums)."""
_SPLIT = (("calls, tokens and cost", ("calls", "input", "output", "cache write", "cache read",
                                      "USD")),
          ("reliability and latency", ("attempts", "errors", "429s", "retries", "maybe billed",
                                       "maybe USD", "p50 s", "p95 s", "p99 s")),
          ("caching", ("calls", "cache hits", "saved USD", "cache write", "cache read",
                       "read %")))


def _print(console: Console, title: str, rows: list[Rollup], total: Rollup | None) -> None:
    """One table if it fits the terminal, else narrower ones (costs, then reliability), each
    halved again while it is still too wide: no id or figure is ever wrapped or cut."""
    if _fits(console, _table(title, rows, total, _COLUMNS)):
        console.print(_table(title, rows, total, _COLUMNS))
        return
    for part, columns in _SPLIT:
        _print_part(console, f"{title}: {part}", rows, total, columns)


def _print_part(console: Console, title: str, rows: list[Rollup], total: Rollup | None,
                columns: tuple[str, ...]) -> None:
    groups = _groups(console, rows, total, columns)
    for i, group in enumerate(groups, 1):
        part = f"{title} ({i}/{len(groups)})" if len(groups) > 1 else title
        console.print(_table(part, rows, total, group))


def _groups(console: Console, rows: list[Rollup], total: Rollup | None,
            columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``columns`` cut in halves, again and again, until each part's table fits."""
    if len(columns) == 1 or _fits(console, _table("", rows, total, columns)):
        return [columns]
    half = (len(columns) + 1) // 2
    return (_groups(console, rows, total, columns[:half])
            + _groups(console, rows, total, columns[half:]))


def _fits(console: Console, table: Table) -> bool:
    unbounded = console.options.update_width(10_000)
    return Measurement.get(console, unbounded, table).maximum <= console.width


def _table(title: str, rows: list[Rollup], total: Rollup | None,
           columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    # A run id is copied into the next command: never wrap it (``_print`` splits the table
    # when it would not fit).
    longest = max((len(row.key) for row in rows), default=3)
    table.add_column(rows[0].by if rows else "key", no_wrap=True, min_width=longest)
    for name in columns:  # "cache write" over two lines: the header is the widest cell
        table.add_column(name.replace("cache ", "cache\n"), justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row.key, *_cells(row, columns))
    if total is not None and len(rows) != 1:
        table.add_section()
        table.add_row("total", *_cells(total, columns), style="bold")
    return table


def _cells(row: Rollup, columns: tuple[str, ...]) -> list[str]:
    cells = {
        "calls": f"{row.calls:,}", "attempts": f"{row.attempts:,}", "errors": f"{row.errors:,}",
        "429s": f"{row.rate_limited:,}", "retries": f"{row.retries:,}",
        "input": f"{row.input_tokens:,}", "output": f"{row.output_tokens:,}",
        "cache write": f"{row.cache_write_5m + row.cache_write_1h:,}",
        "cache read": f"{row.cache_read:,}", "USD": f"${row.cost_usd.quantize(_MICRO_USD):,}",
        "p50 s": _seconds(row.latency_p50), "p95 s": _seconds(row.latency_p95),
        "p99 s": _seconds(row.latency_p99), "cache hits": f"{row.cache_hits:,}",
        "saved USD": f"${row.saved_usd.quantize(_MICRO_USD):,}",
        "read %": "-" if row.prompt_cache_hit_rate is None else
                  f"{row.prompt_cache_hit_rate:.0%}",
        "maybe billed": f"{row.possibly_billed:,}",
        "maybe USD": f"${row.possibly_billed_usd.quantize(_MICRO_USD):,}",
    }
    return [cells[name] for name in columns]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
