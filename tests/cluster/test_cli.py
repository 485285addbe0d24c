"""The CLI app is built explicitly from one table, cheaply, with one error boundary."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
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


def test_the_drivers_run_path_does_not_import_the_sdk() -> None:
    """A driver never calls the API (its agents do), and the SDK takes ~1.5 s to import."""
    code = ("import sys, cluster, cluster.runtime, cluster.run_command, cluster.emulator_actor, "
            "topologies, topologies.session, topologies.run_context; "
            "from topologies.architecture import get_architecture; get_architecture('research'); "
            "print(sorted(m for m in ('anthropic', 'httpx2') if m in sys.modules))")
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


@pytest.mark.slow
def test_a_private_run_says_how_it_started_ray_and_prints_no_constructor_warning() -> None:
    """The Backend carries names, not actor handles: Ray no longer warns, for every Agent,
    that its constructor arguments are in the object store."""
    tmp_path = Path(tempfile.mkdtemp(prefix="rt8-cli-", dir="/tmp"))  # short socket paths
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path), "RAY_AUTH_MODE": "disabled",
           "RAYTROUPE_DATA_DIR": str(tmp_path / "data")}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "raytroupe"), "run",
                               "research", "How do actors restart?", "-q"], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "raytroupe: starting a private Ray for this driver" in done.stderr
    assert "constructor arguments in the object store" not in done.stderr
