"""The key stays out of what ``test_secrets.py`` cannot reach in-process (issue 12 item 3).

A fresh process (``secret_leak_driver.py``) with its own Ray and a canary key runs
``raytroupe run pipeline`` with ``ANTHROPIC_LOG=debug`` (the SDK's own request logging, in
every Agent's worker), then forces the object store to spill. The canary must appear in none
of: the CLI's output and the worker logs Ray streams to it, any file of that Ray's session
(logs included), the spilled objects (the key travels in actor constructor arguments), the
node's ``/metrics``, the Ledger's data dir.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANARY = "sk-ant-api03-CANARY" + uuid.uuid4().hex


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_the_key_stays_out_of_debug_logs_spilled_objects_and_metrics(tmp_path: Path) -> None:
    # Short: Ray's socket paths under it must fit in 107 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAYTROUPE_", "RAY_ADDRESS"))}
    env.update(ANTHROPIC_API_KEY=CANARY, ANTHROPIC_LOG="debug", RAY_TMPDIR=str(ray_tmp),
               COLUMNS="200", PYTHONPATH=str(REPO))
    try:
        run = subprocess.run([sys.executable, "-m", "tests.secret_leak_driver", str(tmp_path)],
                             capture_output=True, cwd=REPO, env=env, timeout=240)
        surfaces = json.loads((tmp_path / "surfaces.json").read_text())
        in_session = _files_holding(ray_tmp, CANARY.encode())
        session_text = b"".join(p.read_bytes() for p in ray_tmp.rglob("*.err") if p.is_file())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)

    output = run.stdout + run.stderr
    assert run.returncode == 0 and surfaces["cli_exit"] == 0, output.decode()[-3000:]
    assert surfaces["requests"] >= 1  # the run reached the API, with the canary as its key
    assert b"Request options" in output + session_text  # the SDK's debug log was on
    assert surfaces["spill"]["files"] > 0 and surfaces["spill"]["bytes"] >= 25 * 1024 * 1024
    assert surfaces["metrics"].count("ray_") > 10  # the node's metrics page was read

    assert CANARY.encode() not in output, "the key leaked into the CLI's output"
    assert in_session == [], f"the key leaked into {in_session}"
    assert surfaces["spill"]["with_canary"] == [], "the key leaked into a spilled object"
    assert CANARY not in surfaces["metrics"], "the key leaked into /metrics"
    assert _files_holding(tmp_path / "data", CANARY.encode()) == []
