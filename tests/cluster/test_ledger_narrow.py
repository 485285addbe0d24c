"""``raytroupe ledger`` on narrow terminals: run ids and figures are never wrapped or cut."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.ledger import Ledger
from actors.messages import Usage
from tests.actors.ledger_fixtures import T0, make_record
from tests.cluster.cli_app import app

RUNS = ("mapreduce-76cb78cf", "specialist_pool-0f2061526b")


async def _fill(data_dir: Path) -> None:
    ledger = Ledger(data_dir)
    await ledger.record([
        make_record("a", 0, run_id=RUNS[0], usage=Usage(input_tokens=123_456,
                                                         output_tokens=7_890)),
        make_record("b", 0, run_id=RUNS[1], started_at=T0 + 5, latency_s=12.5),
    ])
    await ledger.close()


@pytest.mark.parametrize("columns", [80, 60])
def test_run_ids_and_figures_stay_whole(tmp_path: Path, columns: int) -> None:
    asyncio.run(_fill(tmp_path))
    result = CliRunner().invoke(app, ["ledger", "--data-dir", str(tmp_path)],
                                env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines)
    for run in RUNS:
        assert any(f"│ {run} " in line for line in lines), result.stdout
    for figure in ("123,456", "7,890", "$0.016291", "12.500"):
        assert figure in result.stdout, (figure, result.stdout)
    assert "…" not in result.stdout and ") (" not in result.stdout  # parts numbered once
