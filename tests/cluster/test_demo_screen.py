"""The README's demo (the Makefile's ``demo`` line) as a person sees it on an 80-column terminal.

The command runs under a real pseudo-terminal, so rich draws its live bar as it would for a
user; ``pyte`` replays the bytes into the final screen. The Makefile's command line is read
from the Makefile itself, so this test follows the demo when it changes.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from tests.cluster.pty_screen import Screen, run_on_screen

ROOT = Path(__file__).resolve().parents[2]
_BAR_END = re.compile(r"\d+:\d\d:\d\d ETA (\d+:\d\d:\d\d|-:--:--)$")


def _demo_argv() -> list[str]:
    """The ``demo`` recipe of the Makefile, with ``$(BIN)`` and ``$(DEMO_QUESTION)`` filled."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    question = re.search(r"^DEMO_QUESTION \?= (.+)$", makefile, re.MULTILINE).group(1)
    recipe = re.search(r"^demo: .*\n((?:\t.*\n)+)", makefile, re.MULTILINE).group(1)
    line = recipe.replace("\\\n", " ").replace("\t", " ").strip()
    line = line.replace("$(DEMO_QUESTION)", question)
    argv = shlex.split(line)
    assert argv[0] == "$(BIN)/raytroupe", argv
    return [str(Path(sys.executable).parent / "raytroupe"), *argv[1:]]


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Screen, Screen]:
    """The demo twice on one data dir: a first run, then a resumed one (every chunk stored)."""
    data_dir = tmp_path_factory.mktemp("demo-data")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("ANTHROPIC_", "RAYTROUPE_"))}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               RAYTROUPE_DATA_DIR=str(data_dir))
    argv = _demo_argv()
    return (run_on_screen(argv, columns=80, env=env, cwd=str(ROOT)),
            run_on_screen(argv, columns=80, env=env, cwd=str(ROOT)))


def _bar(screen: Screen) -> str:
    finished = [line for line in screen.lines if line.startswith("mapreduce: done")]
    assert finished, screen.text
    return finished[-1]


def _chunks(screen: Screen) -> int:
    return int(next(line for line in screen.lines if line.startswith("chunks: ")).split()[1])


@pytest.mark.slow
def test_the_demo_bar_counts_chunks_exactly_and_keeps_its_times(
        screens: tuple[Screen, Screen]) -> None:
    for screen in screens:
        assert screen.exit_code == 0, screen.text
        chunks = _chunks(screen)
        bar = _bar(screen)
        assert f" {chunks}/{chunks} chunks " in bar, bar  # the reducer is not a chunk
        assert _BAR_END.search(bar), bar  # elapsed and ETA whole at 80 columns


@pytest.mark.slow
def test_the_demo_prints_no_empty_fields_and_a_second_run_reuses_every_chunk(
        screens: tuple[Screen, Screen]) -> None:
    first, second = screens
    for screen in screens:
        assert not [line for line in screen.lines if re.fullmatch(r"\w+:", line)], screen.text
        assert "skipped 2 input(s):" in screen.lines, screen.text  # the corpus' two bad files
        assert "Ledger by agent" in screen.lines and "Ledger by tier" in screen.lines
    assert f"chunks_reused: {_chunks(second)}" in second.lines, second.text
    assert "chunks_reused: 0" in first.lines


@pytest.mark.slow
def test_the_demo_screen_has_no_ray_warnings(screens: tuple[Screen, Screen]) -> None:
    for screen in screens:
        assert "core_worker.cc" not in screen.text, screen.text
