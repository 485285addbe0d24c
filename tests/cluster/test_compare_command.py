"""``raytroupe compare``: presets and TOML configs side by side; costs that are the bill."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.cluster import test_run_command as shared
from tests.cluster.cli_app import app

served, emulator, env = shared.served, shared.emulator, shared.env


def _by_model(body: dict[str, Any]) -> str:
    """Longer answers from bigger models; the reflector always says the try succeeded."""
    if "reflector" in body["system"][0]["text"]:
        return '{"success": true}'
    words = {"haiku": 3, "sonnet": 6, "opus": 12}
    size = next(n for tier, n in words.items() if tier in body["model"])
    return " ".join(f"point{i}" for i in range(size))


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("# two prompts\nFirst question?\n\nSecond question?\n", encoding="utf-8")
    return path


def _compare(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["compare", *args], env=env)


def test_presets_and_a_toml_file_agree_and_cost_what_was_billed(
        env: dict[str, str], emulator: Any, prompts: Path, tmp_path: Path) -> None:
    emulator.set_responder(_by_model)
    custom = tmp_path / "cheap.toml"
    custom.write_text('name = "cheap-exec"\n[config]\nexecutor_model = "haiku"\n'
                      'reflector_model = "haiku"\n', encoding="utf-8")
    result = _compare(env, "all-opus", "all-haiku", str(custom), "--arch", "reflexion",
                      "--prompts", str(prompts), "--no-warmup", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["all-opus", "all-haiku", "cheap-exec"]
    assert rows["all-opus"]["quality"] == 1.0  # the reference agrees with itself
    # 3 of opus's 12 words: haiku's answers agree with a quarter of the reference's.
    assert rows["all-haiku"]["quality"] == rows["cheap-exec"]["quality"] == 0.25
    costs = {name: Decimal(row["cost_usd"]) for name, row in rows.items()}
    assert sum(costs.values()) == Decimal(emulator.stats()["total_cost_usd"])
    assert costs["all-haiku"] < costs["all-opus"]
    best = [name for name, row in rows.items() if row["best"]]
    assert len(best) == 1 and rows[best[0]]["quality_per_usd"] == max(
        row["quality_per_usd"] for row in rows.values())


def test_a_user_score_the_table_and_the_matrix(env: dict[str, str], emulator: Any,
                                               prompts: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    emulator.set_responder(_by_model)
    (tmp_path / "myscores.py").write_text(
        "def words(prompt, answer):\n    return len(answer.split()) / 12\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    matrix = tmp_path / "matrix.png"
    result = _compare(env, "all-haiku", "all-sonnet", "--arch", "reflexion", "--prompts",
                      str(prompts), "--score", "myscores:words", "--png", str(matrix))
    assert result.exit_code == 0, result.output
    lines = {line.split()[1]: line for line in result.stdout.splitlines()
             if line.startswith("│ all-")}
    assert "0.25" in lines["all-haiku"] and "0.50" in lines["all-sonnet"]
    assert sum("best" in line for line in lines.values()) == 1
    assert "quality: your score; 2 prompt(s) each" in result.stdout
    from matplotlib import image

    pixels = image.imread(matrix)
    assert pixels.shape[0] >= 400 and len({tuple(p) for p in pixels.reshape(
        -1, pixels.shape[2])[::31]}) > 10


@pytest.mark.parametrize(("args", "message"), [
    (["all-gpt"], "config 'all-gpt' is neither a preset"),
    (["BAD_TOML"], "BAD_TOML"),
    (["EXTRA_TOML"], "colour: Extra inputs are not permitted"),
    (["all-haiku", "--prompts", "/no/such/prompts.txt"], "--prompts '/no/such/prompts.txt'"),
    (["all-haiku", "--prompts", "EMPTY"], "holds no prompt"),
    (["all-haiku", "--score", "nocolon"], "--score 'nocolon': give MODULE:FUNCTION"),
    (["all-haiku", "--score", "no_such_module_xyz:f"], "No module named 'no_such_module_xyz'"),
    (["all-haiku", "--reference", "mixed"], "--reference 'mixed' is not one of all-haiku"),
    (["all-haiku", "all-haiku"], "two configurations share a name"),
    (["all-haiku", "--png", "matrix.svg"], "must end in .png"),
    (["all-haiku", "--arch", "nope"], "unknown architecture 'nope'"),
])
def test_bad_input_is_one_line_exit_2_and_no_call(env: dict[str, str], emulator: Any,
                                                  prompts: Path, tmp_path: Path,
                                                  args: list[str], message: str) -> None:
    bad, extra, empty = tmp_path / "bad.toml", tmp_path / "extra.toml", tmp_path / "empty.txt"
    bad.write_text("name = \n", encoding="utf-8")
    extra.write_text('colour = "red"\n', encoding="utf-8")
    empty.write_text("# nothing\n\n", encoding="utf-8")
    swap = {"BAD_TOML": str(bad), "EXTRA_TOML": str(extra), "EMPTY": str(empty)}
    args = [swap.get(a, a) for a in args]
    message = message.replace("BAD_TOML", f"config '{bad}': ")
    if "--prompts" not in args:
        args += ["--prompts", str(prompts)]
    result = _compare(env, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert emulator.stats()["requests"] == 0
