"""The CLI app is built explicitly from one table, cheaply, with one error boundary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import COMMANDS, build_app


def test_importing_the_cli_loads_neither_ray_nor_the_sdk() -> None:
    code = ("import sys, cluster.cli; "
            "print(sorted(m for m in ('ray', 'anthropic', 'topologies') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_top_help_lists_every_command_without_importing_them() -> None:
    code = ("import sys; from typer.testing import CliRunner; from cluster.cli import build_app; "
            "r = CliRunner().invoke(build_app(), ['--help']); print(r.exit_code); print(r.output);"
            "print('ray' in sys.modules, 'anthropic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"COLUMNS": "120", "PATH": ""}).stdout
    assert out.splitlines()[0] == "0"
    for name in COMMANDS:
        assert f" {name} " in out
    assert out.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_loads_and_has_help(name: str) -> None:
    result = CliRunner().invoke(build_app(), [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_two_apps_built_in_one_process_are_the_same() -> None:
    first, second = build_app(), build_app()
    for app in (first, second):
        out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "120"}).output
        assert out.count(" mapreduce ") == 1


def test_a_raytroupe_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["ledger", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: no Ledger journal at {tmp_path}/ledger.sqlite: run something first, or pass "
        "--data-dir"]
