"""``raytroupe report``: from the journal alone, a page and an image a person can read.

The HTML is opened the way a person would: in a real browser (headless Chromium), screenshot
and DOM; the PNG is decoded and its pixels looked at. No Ray is needed: the journal is filled
by a Ledger called directly, with one attempt of every status the timeline colours.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from actors.ledger import Ledger
from actors.messages import Usage
from tests.actors.ledger_fixtures import T0, make_record
from tests.cluster.cli_app import app

RUN = "report-run-7f3a"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


async def _fill(data_dir: Path) -> None:
    ledger = Ledger(data_dir)
    await ledger.record([
        make_record("lead", 0, run_id=RUN, role="lead", tier="sonnet",
                    model="claude-sonnet-5-5", latency_s=1.2, streamed=True, ttft_s=0.3),
        make_record("w1", 0, run_id=RUN, role="worker-1", started_at=T0 + 1.3,
                    status="error", http_status=429, usage=Usage(), latency_s=0.1),
        make_record("w1", 1, run_id=RUN, role="worker-1", started_at=T0 + 2.0, latency_s=0.8),
        make_record("w2", 0, run_id=RUN, role="worker-2", started_at=T0 + 1.3, latency_s=0.9),
        make_record("w3", 0, run_id=RUN, role="worker-2", started_at=T0 + 1.4,
                    status="cache_hit", source="cache", latency_s=0.01),
        make_record("s1", 0, run_id=RUN, role="worker-3", started_at=T0 + 1.3,
                    speculative=True, latency_s=0.5),
        make_record("s1", 1, run_id=RUN, role="worker-3", started_at=T0 + 1.3,
                    speculative=True, status="cancelled", latency_s=0.6),
        make_record("e1", 0, run_id=RUN, role="worker-3", started_at=T0 + 2.0,
                    status="error", http_status=500, usage=Usage(), latency_s=0.2),
        make_record("x", 0, run_id="older-run", started_at=T0 - 600),
    ])
    await ledger.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report-ledger")
    asyncio.run(_fill(path))
    return path


def _report(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["report", *args, "--data-dir", str(data_dir)],
                                env={"COLUMNS": "120"})
    return result.exit_code, result.stdout, result.stderr


def test_the_terminal_summary_names_the_latest_run_and_counts_every_status(
        data_dir: Path) -> None:
    code, out, _ = _report(data_dir)
    assert code == 0, out
    # The latest run by default; from the first send (T0) to w1's retry's last byte (T0+2.8).
    assert out.startswith(f"run {RUN} (research): 2.80 s, $0.003600, 6 calls, 8 attempts")
    line = next(line for line in out.splitlines() if line.startswith("attempts: "))
    counts = dict(reversed(part.split(" ", 1)) for part in line[10:].split(", "))
    assert counts == {"ok": "3", "429": "1", "retried": "1", "cache hit": "1",
                      "speculative loser": "1", "error": "1"}


def test_the_png_is_a_real_picture(data_dir: Path, tmp_path: Path) -> None:
    from matplotlib import image

    target = tmp_path / "run.png"
    code, out, _ = _report(data_dir, RUN, "--png", str(target))
    assert code == 0, out
    pixels = image.imread(target)
    height, width = pixels.shape[:2]
    assert width >= 1000 and height >= 600
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::97]}) > 20


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                    reason=f"no Chromium at {CHROMIUM} to open the page in "
                    "(apt-get install chromium; .ci/run installs it)")
def test_the_html_opens_offline_in_a_browser(data_dir: Path, tmp_path: Path) -> None:
    from matplotlib import image

    page = tmp_path / "run.html"
    code, out, _ = _report(data_dir, RUN, "--html", str(page))
    assert code == 0, out
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text  # one file, nothing fetched
    shot = tmp_path / "shot.png"
    dom = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,900", page)
    dom = _chromium(tmp_path, "--dump-dom", page)
    assert f"raytroupe run {RUN}" in dom
    assert dom.count("<rect") == 8 and "speculative loser" in dom
    pixels = image.imread(shot)
    assert pixels.shape[1] == 1100
    colours = {tuple(p) for p in pixels.reshape(-1, pixels.shape[2])[::53]}
    assert len(colours) > 20, "the screenshot is blank"


def _chromium(profile: Path, *args: object) -> str:
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile / 'chromium'}",
         *(str(a) if not isinstance(a, Path) else a.as_uri() for a in args)],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["nope"], "run 'nope' is not in the Ledger"),
    (["--html", "/no/such/dir/run.html"], "folder '/no/such/dir' does not exist"),
    (["--png", "run.jpg"], "must end in .png"),
    (["--html", "."], "must end in .html"),
])
def test_bad_input_is_one_line_and_a_non_zero_exit(data_dir: Path, args: list[str],
                                                   message: str) -> None:
    code, out, err = _report(data_dir, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_no_journal_is_one_line(tmp_path: Path) -> None:
    code, _, err = _report(tmp_path)
    assert code == 2 and f"no Ledger journal at {tmp_path}" in err
