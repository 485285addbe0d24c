"""``raytroupe run mapreduce``: the shipped corpus end to end, resume, skipped files, bad input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cluster.cli import build_app
from tests.cluster.table_rows import row

app = build_app()  # as the console script does: every command, from one table

CORPUS = str(Path(__file__).resolve().parents[2] / "examples" / "corpus")
QUESTION = "What caused the great flood of 1887?"


@pytest.fixture(scope="module")
def singletons(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Hold the cluster's Ledger and RateLimiter for the module.

    Each CLI run drops its handles when it ends, and Ray destroys a named job-scoped actor
    once no handle is left; a second run in the same process could join the Ledger while it
    is being destroyed (seen here as ``ActorDiedError``). A real CLI run is its own process,
    so only tests that run the CLI twice in one process need this.
    """
    import cluster
    from cluster.settings import Settings

    settings = Settings(anthropic_base_url="http://127.0.0.1:9", _env_file=None,
                        data_dir=tmp_path_factory.mktemp("ledger"))
    yield cluster.init(settings=settings)
    cluster.shutdown()  # forgets the runtime; Ray itself belongs to ray_session


@pytest.fixture
def env(singletons: Any, emulator: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield {"ANTHROPIC_BASE_URL": emulator.base_url, "RAYTROUPE_DATA_DIR": str(tmp_path),
           "COLUMNS": "200"}
    emulator.set_responder(None)


def _run(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(app, ["run", "mapreduce", *args], env=env)


def _field(output: str, name: str) -> str:
    match = re.search(rf"^{name}: (.*)$", output, re.MULTILINE)
    assert match, f"no {name!r} in:\n{output}"
    return match.group(1)


def test_the_demo_prints_answer_ledger_and_skipped_files_then_resumes_for_free(
        env: dict[str, str], emulator: Any) -> None:
    def answer(body: dict[str, Any]) -> str:
        return "THE ANSWER" if "final answer" in body["system"][0]["text"] else "a note"

    emulator.set_responder(answer)
    first = _run(env, CORPUS, "--question", QUESTION, "--mapper", "haiku", "--reducer",
                 "sonnet", "--max-parallel", "16", "--chunk-size", "300", "--budget", "2.00")

    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("THE ANSWER")
    chunks = int(_field(first.stdout, "chunks"))
    assert chunks > 12 and _field(first.stdout, "chunks_mapped") == str(chunks)
    hosts = [row(first.stdout, f"mapper-{i}") for i in (1, 2)]
    assert sum(int(row[1]) for row in hosts) == chunks
    assert row(first.stdout, "reducer")[1] == "1"
    assert (row(first.stdout, "haiku")[1], row(first.stdout, "sonnet")[1]) == (str(chunks),
                                                                                 "1")
    assert "batches:" not in first.stdout  # counters of a feature the run did not use
    assert "harbour-map.png: binary (NUL bytes)" in first.stderr
    assert "letter-latin1.txt: not UTF-8 text (byte 15)" in first.stderr

    emulator.reset()
    again = _run(env, CORPUS, "--question", QUESTION, "--chunk-size", "300", "--quiet")
    assert again.exit_code == 0, again.output
    assert (_field(again.stdout, "chunks_reused"), _field(again.stdout, "chunks_mapped")) == \
        (str(chunks), "0")
    assert emulator.stats()["requests"] == 1  # only the reducer: every chunk was stored


@pytest.mark.parametrize(("args", "code", "message"), [
    ([f"{CORPUS}/harbour-map.png", f"{CORPUS}/letter-latin1.txt"], 2,
     "nothing to map"),
    (["no/such/folder"], 2, "no/such/folder: not found"),
    ([CORPUS, "--chunk-size", "100", "--chunk-overlap", "60"], 2,
     r"chunk_overlap \(60\) must be at most half"),
    ([CORPUS, "--mapper", "gpt-9"], 2, "'gpt-9', which is neither a tier"),
    ([CORPUS, "--budget", "lots"], 2, "--budget 'lots' is not a number"),
    ([CORPUS, "--batch", "--stream"], 2, "--batch cannot be combined with --stream"),
    ([CORPUS, "--budget", "0.000001", "--hosts", "1"], 1, r"budget \$0\.000001 would be"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(env: dict[str, str], emulator: Any,
                                                  args: list[str], code: int,
                                                  message: str) -> None:
    result = _run(env, *args, "--question", QUESTION)
    assert result.exit_code == code, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and re.search(message, last)
    assert emulator.stats()["requests"] == 0
