"""``raytroupe ledger``: reads the journal file (no Ray) and prints runs and roll-ups."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.ledger import Ledger
from actors.messages import Usage
from cluster.cli import build_app
from tests.actors.ledger_fixtures import T0, make_record
from tests.cluster.table_rows import row

CANARY = "sk-ant-api03-CANARY0123456789abcdefCANARY"
WIDE = {"COLUMNS": "250"}

app = build_app()  # as the console script does: every command, from one table


async def _fill(data_dir: Path) -> None:
    ledger = Ledger(data_dir)
    await ledger.record([
        make_record("a", 0, status="error", http_status=429, usage=Usage(), latency_s=0.2,
                    error_type=f"rate_limit_error {CANARY}"),
        make_record("a", 1, latency_s=1.5),
        make_record("b", 0, role="worker-0", tier="sonnet", model="claude-sonnet-5-5",
                    latency_s=2.5),
        make_record("z", 0, run_id="r2", started_at=T0 + 60,
                    usage=Usage(input_tokens=1_000_000, output_tokens=0)),
    ])
    await ledger.close()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    asyncio.run(_fill(tmp_path))
    return tmp_path


def _ledger(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["ledger", *args], env=WIDE)
    return result.exit_code, result.stdout, result.stderr


def test_lists_runs_with_exact_costs(data_dir: Path) -> None:
    code, out, _ = _ledger("--data-dir", str(data_dir))
    assert code == 0
    # key, calls, attempts, errors, 429s, retries, input, output, cache w, cache r, USD, p50..,
    # cache hits, saved USD, prompt-cache read %, possibly billed attempts and USD
    assert row(out, "r1") == ["r1", "2", "3", "1", "1", "1", "2,000", "200", "0", "0",
                               "$0.003150", "1.500", "2.500", "2.500", "0", "$0.000000", "0%",
                               "0", "$0.000000"]
    assert row(out, "r2")[10] == "$0.100000"
    assert out.index("r1") < out.index("r2")  # oldest run first


def test_a_run_rolled_up_by_agent_then_tier(data_dir: Path) -> None:
    code, out, _ = _ledger("r1", "--data-dir", str(data_dir))
    assert code == 0
    assert row(out, "r1/research/lead")[1:3] == ["1", "2"]
    assert row(out, "r1/research/worker-0")[10] == "$0.003000"
    assert row(out, "total")[10] == "$0.003150"
    code, out, _ = _ledger("r1", "--data-dir", str(data_dir), "--by", "tier")
    assert (code, row(out, "sonnet")[10], row(out, "haiku")[10]) == (0, "$0.003000",
                                                                        "$0.000150")
    assert "r2" not in out


def test_data_dir_comes_from_the_environment(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["ledger", "--by", "model"],
                                env={**WIDE, "RAYTROUPE_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0
    assert row(result.stdout, "claude-sonnet-5-5")[10] == "$0.003000"


def test_output_never_shows_an_api_key(data_dir: Path) -> None:
    for args in ([], ["r1"], ["r1", "--by", "model"]):
        _, out, err = _ledger(*args, "--data-dir", str(data_dir))
        assert "sk-ant-" not in out + err


def test_missing_journal_is_one_clear_error(tmp_path: Path) -> None:
    code, _, err = _ledger("--data-dir", str(tmp_path / "nowhere"))
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: no Ledger journal at {tmp_path / 'nowhere' / 'ledger.sqlite'}: run something "
        "first, or pass --data-dir"]
    assert not (tmp_path / "nowhere").exists()


def test_unknown_run_names_the_known_ones(data_dir: Path) -> None:
    code, _, err = _ledger("r9", "--data-dir", str(data_dir))
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "run 'r9' is not in the Ledger" in err and "(runs: r1, r2)" in err


def test_an_empty_journal_says_so(tmp_path: Path) -> None:
    async def _budget_only() -> None:
        ledger = Ledger(tmp_path)
        await ledger.set_budget("r1", Decimal(1))
        await ledger.close()

    asyncio.run(_budget_only())
    code, out, _ = _ledger("--data-dir", str(tmp_path))
    assert (code, out.strip()) == (0, f"No calls recorded yet in {tmp_path / 'ledger.sqlite'}.")


def test_a_narrow_terminal_gets_two_readable_tables(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["ledger", "r1", "--data-dir", str(data_dir)],
                                env={"COLUMNS": "80"})
    out = result.stdout
    assert "calls, tokens and cost" in out and "reliability and latency" in out
    assert row(out, "total")[-1] == "$0.003150"  # the cost table's total row, unclipped
    assert max(len(line) for line in out.splitlines()) <= 80


def test_cache_hits_show_what_they_saved_and_prompt_cache_reads_their_share(
        tmp_path: Path) -> None:
    async def _cached_run() -> None:
        ledger = Ledger(tmp_path)
        await ledger.record([
            make_record("a", 0, run_id="rc",
                        usage=Usage(input_tokens=1_000, cache_read=3_000, output_tokens=100)),
            make_record("b", 0, run_id="rc", status="cache_hit", source="cache",
                        http_status=None, latency_s=0.001),
            make_record("c", 0, run_id="rc", status="possibly_billed", http_status=None,
                        usage=Usage(input_tokens=1_000, output_tokens=100)),
        ])
        await ledger.close()

    asyncio.run(_cached_run())
    code, out, _ = _ledger("rc", "--data-dir", str(tmp_path))
    cells = row(out, "rc/research/lead")
    # billed: 1,000 x $0.10 + 3,000 x $0.01 + 100 x $0.50 per MTok; the hit's 1,000 in + 100 out
    # would have cost $0.000150 and is billed 0; the possibly-billed attempt (a lost reply at
    # its reservation, 1,000 in + 100 out) is shown apart, not in USD
    assert (code, cells[10], cells[-5:]) == (0, "$0.000180", ["1", "$0.000150", "75%",
                                                              "1", "$0.000150"])
