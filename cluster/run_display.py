"""What ``raytroupe run`` shows: live progress (calls, tokens, USD, ETA), the result, the bill.

Shared by every ``run`` subcommand (map-reduce included): feed :class:`RunProgress` the
session's events, or drive it directly with ``add_total`` / ``advance`` for other units
(chunks); print the typed result with :func:`print_result` and the Ledger's roll-ups with
:func:`print_ledger`.

Example:
    >>> with RunProgress(console, "research") as progress:       # doctest: +SKIP
    ...     async for event in session.run(prompt):
    ...         progress.on_event(event)
    >>> print_ledger(console, await session.ledger_rollup("agent"),
    ...              await session.ledger_rollup("tier"))         # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from actors.ledger_rollup import Rollup
from topologies.messages import ArchitectureResult

_MICRO = Decimal("0.000001")
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")
_DESCRIPTION_WIDTH = 24
"""Longest phase description shown before the bar (longer ones end in an ellipsis)."""


class RunProgress:
    """A rich progress bar: units done of known total, tokens, USD, elapsed and ETA.

    The bar stretches to the terminal's width and everything else is kept short, so at 80
    columns the line still ends with the elapsed time and the ETA.

    Args:
        console: Where to draw (stderr keeps stdout clean for the answer).
        title: The first words of the line (the architecture's name).
        unit: What the bar counts (``calls``, ``chunks``).
        enabled: False draws nothing (``--quiet``, or output that is not a terminal).
        role: Count only the completions of this role (``mapper``: one per chunk), and take
            the total from the first phase that announces one; later phases (combines, the
            reducer) only change the description. None counts every call of every phase.
    """

    def __init__(self, console: Console, title: str, unit: str = "calls",
                 enabled: bool = True, role: str | None = None) -> None:
        self.title, self.unit, self.role = title, unit, role
        self.tokens, self.cost_usd = 0, Decimal(0)
        self._total_known = False
        self.progress = Progress(
            TextColumn("[bold]{task.description}", table_column=Column(
                no_wrap=True, overflow="ellipsis", max_width=_DESCRIPTION_WIDTH)),
            BarColumn(bar_width=None), MofNCompleteColumn(), TextColumn(unit),
            TextColumn("{task.fields[tokens]:,} tok"), TextColumn("${task.fields[usd]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, disable=not enabled, expand=True)
        self.task: TaskID = self.progress.add_task(title, total=None, tokens=0, usd="0.000000")

    def __enter__(self) -> RunProgress:
        self.progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def describe(self, text: str) -> None:
        """Say what is happening now (a phase)."""
        self.progress.update(self.task, description=f"{self.title}: {text}")

    def add_total(self, units: int) -> None:
        """Announce ``units`` more units of work (the bar's total grows)."""
        current = self.progress.tasks[0].total or 0
        self.progress.update(self.task, total=current + units)

    def advance(self, units: int = 1, *, tokens: int = 0, usd: Decimal = Decimal(0)) -> None:
        """Count finished units and what they cost."""
        self.tokens += tokens
        self.cost_usd += usd
        self.progress.update(self.task, advance=units, tokens=self.tokens,
                             usd=str(self.cost_usd.quantize(_MICRO)))

    def on_event(self, event: Any) -> None:
        """Update from one session event (phases grow the total, completions advance it)."""
        kind = getattr(event, "kind", None)
        if kind == "phase":
            self.describe(event.name)
            if event.total and (self.role is None or not self._total_known):
                self.add_total(event.total)
                self._total_known = True
        elif kind == "agent_completed":
            counted = self.role is None or event.role == self.role
            self.advance(1 if counted else 0, tokens=event.input_tokens + event.output_tokens,
                         usd=event.cost_usd)
        elif kind == "run_completed":
            self.describe("done")


def print_result(console: Console, result: ArchitectureResult) -> None:
    """The answer, then the result's own fields (winner, score...) and the run's totals.

    An answer that is a JSON object of ``summary`` and ``key_points`` (what a synthesizer
    asked for structured output writes) is shown as text: the summary, then the points.
    """
    console.print(render_answer(result.output), markup=False, highlight=False)
    console.print()
    for name, value in _extra_fields(result):
        console.print(f"[bold]{name}[/]: {value}", highlight=False)
    tokens = result.usage.total_input_tokens + result.usage.output_tokens
    console.print(f"[bold]run[/] {result.run_id}: {result.architecture}, {tokens:,} tokens, "
                  f"${result.cost_usd.quantize(_MICRO)}, {result.duration_s:.1f} s",
                  highlight=False)


def render_answer(text: str) -> str:
    """``text`` itself, or a structured answer (``{"summary", "key_points"}``) as prose.

    Example:
        >>> print(render_answer('{"summary": "Rain.", "key_points": ["a", "b"]}'))
        Rain.
        <BLANKLINE>
        - a
        - b
        >>> print(render_answer('```json\\n{"summary": "Rain."}\\n```'))
        Rain.
    """
    body = _FENCE.sub("", text.strip())  # a whole answer in a ```json fence counts too
    try:
        data = json.loads(body)
    except ValueError:
        return text
    if not isinstance(data, dict) or not ({"summary", "key_points"} & data.keys()):
        return text
    parts = [str(data["summary"]).strip()] if data.get("summary") else []
    points = data.get("key_points") or []
    if isinstance(points, list) and points:
        parts.append("\n".join(f"- {str(point).strip()}" for point in points))
    return "\n\n".join(parts) or text


def ledger_table(title: str, rows: Sequence[Rollup], first_column: str) -> Table:
    """One Ledger roll-up as a table, with a total row."""
    table = Table(title=title, title_justify="left")
    table.add_column(first_column)
    for name in ("calls", "retries", "errors", "input", "output", "USD", "p50 s"):
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(row.key.rsplit("/", 1)[-1] if first_column == "agent" else row.key,
                      *_cells(row))
    if len(rows) > 1:
        total = sum(row.cost_usd for row in rows)
        table.add_row("[bold]total", str(sum(r.calls for r in rows)),
                      str(sum(r.retries for r in rows)), str(sum(r.errors for r in rows)),
                      f"{sum(_input(r) for r in rows):,}",
                      f"{sum(r.output_tokens for r in rows):,}", f"{total.quantize(_MICRO)}", "")
    return table


def print_ledger(console: Console, by_agent: Sequence[Rollup], by_tier: Sequence[Rollup]) -> None:
    """The Ledger's tables for the run: per agent, then per tier."""
    console.print(ledger_table("Ledger by agent", by_agent, "agent"))
    console.print(ledger_table("Ledger by tier", by_tier, "tier"))


def _cells(row: Rollup) -> list[str]:
    p50 = f"{row.latency_p50:.2f}" if row.latency_p50 is not None else "-"
    return [str(row.calls), str(row.retries), str(row.errors), f"{_input(row):,}",
            f"{row.output_tokens:,}", f"{row.cost_usd.quantize(_MICRO)}", p50]


def _input(row: Rollup) -> int:
    return row.input_tokens + row.cache_write_5m + row.cache_write_1h + row.cache_read


def _extra_fields(result: ArchitectureResult) -> list[tuple[str, str]]:
    """The result's own short fields (``winner``, ``accepted``, ``subtopics``...).

    Empty values are left out (no bare ``skipped:`` line), and so is a field that repeats
    the answer (a debate's ``verdict`` is its output).
    """
    shown = []
    for name in type(result).model_fields:
        if name in ArchitectureResult.model_fields:
            continue
        value = getattr(result, name)
        if isinstance(value, str):
            if value.strip() and value.strip() != result.output.strip():
                shown.append((name, value))
        elif isinstance(value, int | bool):
            shown.append((name, str(value)))
        elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            shown.append((name, "; ".join(value)))
    return shown
