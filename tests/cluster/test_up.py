"""``raytroupe up`` / ``status`` / ``down``: one runtime that several drivers join and share.

The runtime is started the way a user starts it (``raytroupe up``, a subprocess) in a private
``RAY_TMPDIR`` on free ports, and stopped by ``raytroupe down`` (which stops it by pid), with a
kill of the recorded process group as a fallback. Every driver is a separate process that
finds the runtime as Ray finds a cluster (the current-cluster file under ``RAY_TMPDIR``). The
API is an emulator in this process whose limit binds: the runtime's limiter must keep every
driver under it together (0 x 429), and the one Ledger must equal the emulator's bill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.ledger_journal import JOURNAL_NAME, iter_rollup_rows
from cluster.local_head import free_ports
from emulator import EmulatorConfig, Limits, run_emulator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RPM = 20
"""The runtime's and the emulator's requests/min per tier: binds within a few seconds."""


def _raytroupe(env: dict[str, str], *args: str, timeout: float = 300,
               cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "raytroupe"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False, cwd=cwd)


def _start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)


def _stats(base_url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base_url + "/_emulator/stats", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def up() -> Iterator[dict[str, Any]]:
    temp = tempfile.mkdtemp(prefix="rt8-", dir="/tmp")  # Ray's socket paths must be short
    data_dir = Path(temp) / "data"
    port, dashboard = free_ports(2)
    limits = Limits(rpm=RPM)
    with run_emulator(EmulatorConfig(latency_s=0.05, limits=limits)) as emu:
        env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled",
               "ANTHROPIC_BASE_URL": emu.base_url, "RAYTROUPE_RPM": str(RPM),
               "RAYTROUPE_DATA_DIR": str(data_dir), "PATH": f"{BIN}{os.pathsep}"
               f"{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO)}
        env.pop("RAY_ADDRESS", None)
        started = _raytroupe(env, "up", f"--port={port}", f"--dashboard-port={dashboard}",
                             "--num-cpus=2")
        record_path = Path(temp) / "ray" / "raytroupe-up.json"
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            yield {"env": env, "emulator": emu, "data_dir": data_dir, "out": started.stdout,
                   "dashboard": f"http://127.0.0.1:{dashboard}", "temp": temp,
                   "record": json.loads(record_path.read_text())}
        finally:
            record = json.loads(record_path.read_text()) if record_path.exists() else None
            down = _raytroupe(env, "down", timeout=120)
            if record and record.get("pid"):  # belt and braces: never leave a head behind
                try:
                    os.killpg(record["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
            assert down.returncode == 0, down.stderr


def _ledger_bill(data_dir: Path) -> tuple[int, Decimal]:
    rows = list(iter_rollup_rows(data_dir / JOURNAL_NAME, None, "run"))
    billed = [r for r in rows if r.http_status == 200]
    return len(billed), sum((Decimal(r.cost_usd) for r in rows), Decimal(0))


def test_up_says_where_the_dashboard_is_and_how_to_stop_it(up: dict[str, Any]) -> None:
    assert f"dashboard {up['dashboard']}" in up["out"]
    assert "raytroupe down" in up["out"]
    again = _raytroupe(up["env"], "up")
    assert again.returncode == 0 and "already up" in again.stdout


def test_status_shows_the_singletons_warm_hosts_and_the_runtimes_limits(up: dict[str, Any]) -> None:
    done = _raytroupe({**up["env"], "COLUMNS": "200"}, "status", timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("RateLimiter", "Ledger"):
        line = next(x for x in done.stdout.splitlines() if f" {name} " in x)
        assert "ALIVE" in line
    hosts = [x for x in done.stdout.splitlines() if " AgentHost " in x]
    assert {next(w for w in x.split() if w.startswith("agent-host/")) for x in hosts} == \
        {"agent-host/haiku-0", "agent-host/sonnet-0", "agent-host/opus-0"}, done.stdout
    assert all("ALIVE" in x for x in hosts)
    haiku = next(x for x in done.stdout.splitlines() if " haiku " in x)
    assert f" {RPM} " in haiku
    assert "spent today: $" in done.stdout and "jobs connected: 0" in done.stdout


def test_two_cli_runs_at_once_share_one_limit_and_one_ledger(up: dict[str, Any]) -> None:
    before = _stats(up["emulator"].base_url)["requests"]
    runs = [_start({**up["env"], "RAYTROUPE_RPM": "7"}, str(BIN / "raytroupe"), "run",
                   "mapreduce", str(REPO / "examples" / "corpus"), "--question", question,
                   "--chunk-size", "300", "--hosts", "1", "-q")
            for question in ("What caused the flood?", "Who rebuilt the harbour?")]
    outputs = [run.communicate(timeout=400) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err[-3000:]
        assert "joining the Ray cluster at" in err
        # This driver asked for rpm 7; the runtime's 20 applies, and it is told so.
        assert "rpm 20 (asked 7)" in err
        assert "chunks_mapped" in out or out.strip()
    stats = _stats(up["emulator"].base_url)
    assert stats["requests"] - before > RPM  # the limit had to bind
    assert stats["responses_by_status"].get("429", 0) == 0
    calls, usd = _ledger_bill(up["data_dir"])
    assert calls == stats["responses_by_status"]["200"]
    assert usd == Decimal(stats["total_cost_usd"])


def test_each_singleton_killed_while_three_drivers_run(up: dict[str, Any]) -> None:
    """SIGKILL the RateLimiter, then the Ledger, while three driver processes run: every
    driver finishes every call, nothing is rate-limited, and the Ledger equals the bill.

    The emulator is not killed: this one is the test's own, and its bill is what the Ledger is
    held to. The offline emulator actor (the third singleton) keeps its bill in memory and
    serves on a new port after a restart, so killing it would leave no bill to check."""
    from ray.util.state import list_actors

    calls = 12
    drivers = [_start(up["env"], sys.executable, "-m", "tests.cluster.join_driver",
                      f"kill-{i}", str(calls)) for i in range(3)]
    try:
        _wait_for_records(up["data_dir"], "kill-", 6)
        for class_name in ("RateLimiter", "Ledger"):
            [actor] = [a for a in list_actors(address=up["dashboard"], detail=True)
                       if a.class_name == class_name and a.state == "ALIVE"]
            os.kill(actor.pid, signal.SIGKILL)
            time.sleep(3)  # let the drivers go on against the restarted singleton
        results = [d.communicate(timeout=400) for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                d.kill()
    for d, (out, err) in zip(drivers, results, strict=True):
        assert d.returncode == 0, err[-3000:]
        line = json.loads(out.strip().splitlines()[-1])
        assert line["replies"] == calls and line["joined"] is True
    stats = _stats(up["emulator"].base_url)
    assert stats["responses_by_status"].get("429", 0) == 0
    calls_billed, usd = _ledger_bill(up["data_dir"])
    assert calls_billed == stats["responses_by_status"]["200"]
    assert usd == Decimal(stats["total_cost_usd"])


def _wait_for_records(data_dir: Path, prefix: str, count: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = [r for r in iter_rollup_rows(data_dir / JOURNAL_NAME, None, "run")
                    if r.key.startswith(prefix)]
        except (FileNotFoundError, OSError):
            rows = []
        if len(rows) >= count:
            return
        time.sleep(0.5)
    raise AssertionError(f"no {count} records of {prefix}* in {timeout_s:.0f} s")


def test_limits_set_changes_the_runtimes_limits_for_everyone(up: dict[str, Any]) -> None:
    done = _raytroupe(up["env"], "limits", "set", "--tier", "opus", "--rpm", "33", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("opus: rpm 33, itpm 2,000,000, otpm 400,000, "
                                   "max_concurrency 64")
    shown = _raytroupe(up["env"], "limits", "show", timeout=120)
    assert f"default: rpm {RPM}," in shown.stdout and "opus: rpm 33," in shown.stdout
    bad = _raytroupe(up["env"], "limits", "set", "--tier", "gpt", "--rpm", "1")
    assert bad.returncode == 2 and "--tier 'gpt': choose one of haiku, sonnet, opus" in bad.stderr


_HOST_STATS = ("import json, ray; ray.init(address='auto', namespace='raytroupe', "
               "logging_level='error', log_to_driver=False); print(json.dumps({t: ray.get("
               "ray.get_actor(f'agent-host/{t}-0').stats.remote()) for t in "
               "('haiku', 'sonnet', 'opus')}))")


@pytest.mark.slow
def test_a_cli_run_joining_up_has_its_agents_on_the_warm_hosts(up: dict[str, Any]) -> None:
    run = _raytroupe(up["env"], "run", "research", "q", "--json", timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    run_id = json.loads(run.stdout)["run_id"]
    stats = subprocess.run([sys.executable, "-c", _HOST_STATS], env=up["env"], text=True,
                           capture_output=True, timeout=120, check=True).stdout
    hosts = json.loads(stats.strip().splitlines()[-1])
    assert hosts["sonnet"]["served"][run_id] == 2  # the lead and the synthesizer
    assert hosts["haiku"]["served"][run_id] >= 1  # the researchers
    assert all(h["agents"] == [] for h in hosts.values())  # dropped when the run ended
