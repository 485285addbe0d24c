"""``raytroupe loadtest``: N users against the emulator; figures that match the bill; SLA exit."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.cluster import test_run_command as shared
from tests.cluster.cli_app import app

served, emulator, env = shared.served, shared.emulator, shared.env


def _loadtest(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["loadtest", *args], env=env)


def test_json_figures_add_up_and_cost_is_the_bill(env: dict[str, str], emulator: Any) -> None:
    result = _loadtest(env, "reflexion", "--users", "2", "--requests", "6", "--sla-p95", "60s",
                       "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["requests"] == 6 and stats["errors"] == 0 and stats["users"] == 2
    assert 0 < stats["p50_s"] <= stats["p95_s"] <= stats["p99_s"]
    assert stats["throughput_rps"] > 0 and stats["sla_met"] is True
    # Warm-up queries are not counted as requests, but they were billed, so they are in cost.
    assert Decimal(stats["cost_usd"]) == Decimal(emulator.stats()["total_cost_usd"]) > 0


def test_a_missed_sla_is_said_and_exits_1(env: dict[str, str], emulator: Any) -> None:
    result = _loadtest(env, "debate", "--users", "2", "--requests", "2", "--sla-p95", "1ms",
                       "--no-warmup")
    assert result.exit_code == 1, result.output
    assert "SLA p95 <= 0.001 s: MISSED" in result.stdout
    assert "latency p50 / p95 / p99 s" in result.stdout


def test_a_duration_keeps_the_users_busy_until_it_ends(env: dict[str, str],
                                                       emulator: Any) -> None:
    result = _loadtest(env, "pipeline", "--users", "2", "--duration", "1.5s", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["elapsed_s"] >= 1.5 and stats["requests"] >= 2 and stats["sla_met"] is None


@pytest.mark.parametrize(("args", "message"), [
    (["pipeline", "--duration", "6x"], "--duration '6x' is not a duration > 0"),
    (["pipeline", "--duration", "0s"], "--duration '0s' is not a duration > 0"),
    (["pipeline"], "give exactly one of --duration and --requests"),
    (["pipeline", "--duration", "1s", "--requests", "3"], "give exactly one of"),
    (["pipeline", "--requests", "3", "--users", "0"], "--users: Input should be greater"),
    (["pipeline", "--requests", "3", "--sla-p95", "fast"], "--sla-p95 'fast' is not"),
    (["pipelin", "--requests", "3"], "unknown architecture 'pipelin'"),
    (["mapreduce", "--requests", "3"], "loadtest mapreduce needs --input PATH"),
])
def test_bad_input_is_one_line_exit_2_and_no_call(env: dict[str, str], emulator: Any,
                                                  args: list[str], message: str) -> None:
    result = _loadtest(env, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert emulator.stats()["requests"] == 0
