"""``raytroupe run``: every architecture through the CLI on the emulator; bad input fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from cluster.cli import build_app
from tests.cluster.table_rows import row

app = build_app()  # as the console script does: every command, from one table


@pytest.fixture(scope="module")
def served(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """One emulator, and a runtime held for the module in the CLI's namespace.

    Each ``raytroupe run`` drops its handles when it ends; in a real process that is the end
    of the job, but here the next invocation would find the job-scoped Ledger being
    collected. Holding a runtime keeps the singletons alive between invocations.
    """
    import cluster
    from cluster.settings import Settings
    from emulator import run_emulator

    data_dir = tmp_path_factory.mktemp("cli-ledger")
    with run_emulator() as emu:
        held = cluster.init(settings=Settings(anthropic_base_url=emu.base_url, data_dir=data_dir,
                                              _env_file=None))
        yield emu, data_dir, held


@pytest.fixture
def emulator(served: tuple) -> Iterator[Any]:
    emu = served[0]
    emu.reset()
    yield emu
    emu.set_responder(None)


@pytest.fixture
def env(served: tuple, emulator: Any) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": emulator.base_url, "RAYTROUPE_DATA_DIR": str(served[1]),
            "COLUMNS": "200"}


def _run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["run", *args], env=env)


def test_research_prints_the_answer_and_the_ledger_per_agent_and_tier(
        env: dict[str, str], emulator: Any) -> None:
    def answer(body: dict[str, Any]) -> str:
        system = body["system"][0]["text"]
        if "lead researcher" in system:
            return json.dumps({"subtopics": ["alpha", "beta"]})
        return "FINAL ANSWER" if "synthesizer" in system else "finding"

    emulator.set_responder(answer)
    result = _run(env, "research", "How do actors work?", "--max-parallel", "2",
                  "--subagent", "haiku", "--agent", "researcher_2=opus", "--budget", "2.00")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("FINAL ANSWER")
    assert "subtopics: alpha; beta" in result.stdout
    assert row(result.stdout, "lead")[1] == "1" and row(result.stdout, "synthesizer")[1] == "1"
    assert row(result.stdout, "researcher-1")[1] == row(result.stdout, "researcher-2")[1] == "1"
    tiers = {t: row(result.stdout, t)[1] for t in ("haiku", "sonnet", "opus")}
    assert tiers == {"haiku": "1", "sonnet": "2", "opus": "1"}
    bill = emulator.stats()["total_cost_usd"]
    assert row(result.stdout, "total")[6] == f"{float(bill):.6f}"


@pytest.mark.parametrize("args", [
    ["pipeline", "first item", "second item", "--stage", "outline", "--stage", "write",
     "--stream"],
    ["specialist_pool", "Is this code safe?", "--max-specialists", "2"],
    ["debate", "Tabs beat spaces.", "--rounds", "1", "--judge", "haiku"],
    ["critic_actor", "Write a haiku.", "--max-rounds", "1", "--quiet"],
    ["reflexion", "Write a regex for dates.", "--max-attempts", "2", "--stream"],
])
def test_every_architecture_runs_from_the_cli(env: dict[str, str], emulator: Any,
                                              args: list[str]) -> None:
    result = _run(env, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() and emulator.stats()["requests"] >= 2
    if args[0] == "pipeline":  # two items: nothing streams, the joined result is printed
        assert result.stdout.startswith("[1] ") and "\n[2] " in result.stdout
    if "--quiet" not in args:
        assert "Ledger by agent" in result.stdout and "Ledger by tier" in result.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["research", "   "], 2, "research: the prompt is empty"),
    (["research", "q", "--max-parallel", "0"], 2, "ResearchConfig.max_parallel_agents = 0"),
    (["debate", "q", "--judge", "gpt-9"], 2, "'gpt-9', which is neither a tier"),
    (["research", "q", "--agent", "lead"], 2, "--agent takes NAME=MODEL"),
    (["research", "q", "--budget", "two"], 2, "--budget 'two' is not a number"),
    (["critic_actor", "q", "--threshold", "11"], 2, "score_threshold = 11"),
    (["debate", "Tabs beat spaces.", "--budget", "0.000001"], 1,
     "budget $0.000001 would be exceeded"),
])
def test_bad_input_is_one_clear_line_and_a_non_zero_exit(
        env: dict[str, str], emulator: Any, args: list[str], code: int, message: str) -> None:
    result = _run(env, *args)
    assert result.exit_code == code, result.output
    last = result.stderr.strip().splitlines()[-1]  # after the progress bar, if it started
    assert last.startswith("error: ") and message in last
    assert emulator.stats()["requests"] == 0


def test_an_unknown_architecture_is_refused(env: dict[str, str]) -> None:
    result = _run(env, "reseach", "q")
    assert result.exit_code == 2 and "No such command 'reseach'" in result.output
