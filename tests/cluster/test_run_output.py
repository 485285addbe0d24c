"""What ``raytroupe run`` prints: answers as text (or JSON), once, and the report at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.cluster import test_run_command as shared
from tests.cluster.cli_app import app

# The run tests' fixtures: one emulator and one held runtime for both modules' invocations.
served, emulator, env = shared.served, shared.emulator, shared.env


def _run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["run", *args], env=env)


def _structured(body: dict[str, Any]) -> str:
    system = body["system"][0]["text"]
    if "lead researcher" in system:
        return json.dumps({"subtopics": ["alpha"]})
    if "synthesizer" in system:
        return json.dumps({"summary": "Floods follow rain.",
                           "key_points": ["The river rose.", "The town built a wall."]})
    return "finding"


def test_a_structured_answer_is_shown_as_a_summary_then_its_points(
        env: dict[str, str], emulator: Any) -> None:
    emulator.set_responder(_structured)
    result = _run(env, "research", "Why the flood?", "--max-parallel", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "Floods follow rain.\n\n- The river rose.\n- The town built a wall.\n"), result.stdout
    assert "key_points" not in result.stdout


def test_rays_warnings_during_a_run_go_to_stderr_not_into_the_answer(
        env: dict[str, str], emulator: Any) -> None:
    # What happened in CI: the raylet warned every driver ("8 PYTHON worker processes have
    # been started ...") while a run printed its answer, and Ray prints that to stdout.
    import ray
    from ray._private.utils import publish_error_to_driver

    warned: list[bool] = []

    def warn_then_answer(body: dict[str, Any]) -> str:
        if not warned:
            warned.append(True)
            publish_error_to_driver("worker_pool_large", "WARNING: the raylet speaks",
                                    ray._private.worker.global_worker.gcs_client)
            time.sleep(2.0)  # the driver's listener thread prints it while the run goes on
        return _structured(body)

    emulator.set_responder(warn_then_answer)
    result = _run(env, "research", "Why the flood?", "--max-parallel", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["architecture"] == "research", result.stdout
    assert "the raylet speaks" in result.stderr


def test_json_prints_the_raw_result_and_nothing_else(env: dict[str, str],
                                                     emulator: Any) -> None:
    emulator.set_responder(_structured)
    result = _run(env, "research", "Why the flood?", "--max-parallel", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert json.loads(data["output"])["key_points"][0] == "The river rose."
    assert data["architecture"] == "research" and data["subtopics"] == ["alpha"]


def test_a_debate_prints_its_verdict_once(env: dict[str, str], emulator: Any) -> None:
    emulator.set_responder(lambda body: "THE VERDICT IS IN\nWINNER: proponent"
                           if "judge" in body["system"][0]["text"] else "an argument")
    result = _run(env, "debate", "Tabs beat spaces.", "--rounds", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("THE VERDICT IS IN") == 1, result.stdout
    assert "winner: proponent" in result.stdout


def test_report_writes_the_runs_page_at_the_end(env: dict[str, str], emulator: Any,
                                                tmp_path: Path) -> None:
    page = tmp_path / "run.html"
    result = _run(env, "critic_actor", "Write a haiku.", "--max-rounds", "1", "--quiet",
                  "--report", str(page))
    assert result.exit_code == 0, result.output
    run_id = next(line.split()[1].rstrip(":") for line in result.stdout.splitlines()
                  if line.startswith("run "))
    text = page.read_text(encoding="utf-8")
    assert f"raytroupe run {run_id}" in text and text.count("<rect") == emulator.stats()[
        "requests"]


def test_an_unwritable_report_fails_before_any_call(env: dict[str, str], emulator: Any,
                                                    tmp_path: Path) -> None:
    result = _run(env, "debate", "q", "--report", str(tmp_path / "missing" / "r.html"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: --report '{tmp_path}/missing/r.html': folder "
                                     f"'{tmp_path}/missing' does not exist")
    assert emulator.stats()["requests"] == 0


@pytest.mark.parametrize(("command", "options"), [
    ("specialist_pool", ("--router", "--specialist", "--aggregator")),
    ("debate", ("--debater", "--judge")),
    ("critic_actor", ("--actor", "--critic")),
    ("reflexion", ("--executor", "--reflector")),
])
def test_every_role_option_says_what_it_sets(command: str, options: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, ["run", command, "--help"], env={"COLUMNS": "200"})
    for option in options:
        line = next(line for line in result.stdout.splitlines() if f"{option} " in line)
        assert "tier or model id. Default: " in line, line
