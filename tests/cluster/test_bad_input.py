"""Bad input, tried as a new user would: one clear line naming it, a non-zero exit, no Ray.

Every case runs the real console-script entry (``cluster.cli.main``) in a fresh process (one
process for all cases, ``bad_input_driver.py``) with an empty ``RAY_TMPDIR``: a case passes
only if it printed one ``error:`` line naming the input, exited non-zero, raised nothing, and
never started Ray (issue 12: these printed tracebacks, or waited 13 s for Ray first).
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
from typing import Any

import pytest

from actors.errors import ConfigError
from cluster.settings import Settings
from tests.actors.ledger_fixtures import truncated_journal

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-ant-api03-CANARY-NEWLINE"
RUN = ["run", "research", "How do actors work?"]
PRICE = 'models."claude-haiku-5-5"'

# (case id, args, env, what the line must say); {tmp} is the module's scratch directory.
CASES: list[tuple[str, list[str], dict[str, str], str]] = [
    ("budget-nan", [*RUN, "--budget", "NaN"], {},
     "--budget 'NaN' must be a number of dollars above 0"),
    ("budget-inf", [*RUN, "--budget", "inf"], {},
     "--budget 'inf' must be a number of dollars above 0"),
    ("budget-negative", [*RUN, "--budget", "-1"], {},
     "--budget '-1' must be a number of dollars above 0"),
    ("budget-zero", [*RUN, "--budget", "0"], {}, "--budget '0' must be a number of dollars"),
    ("rpm-zero", RUN, {"RAYTROUPE_RPM": "0"},
     "RAYTROUPE_RPM='0' is invalid: Input should be greater than 0"),
    ("rpm-negative", RUN, {"RAYTROUPE_RPM": "-5"},
     "RAYTROUPE_RPM='-5' is invalid: Input should be greater than 0"),
    ("rpm-fraction", RUN, {"RAYTROUPE_RPM": "1.5"},
     "RAYTROUPE_RPM='1.5' is invalid: Input should be a valid integer"),
    ("itpm-zero", RUN, {"RAYTROUPE_ITPM": "0"}, "RAYTROUPE_ITPM='0' is invalid"),
    ("otpm-text", RUN, {"RAYTROUPE_OTPM": "lots"}, "RAYTROUPE_OTPM='lots' is invalid"),
    ("concurrency-zero", RUN, {"RAYTROUPE_MAX_CONCURRENCY": "0"},
     "RAYTROUPE_MAX_CONCURRENCY='0' is invalid"),
    ("profile", RUN, {"RAYTROUPE_EMULATOR_PROFILE": "bogus"},
     "RAYTROUPE_EMULATOR_PROFILE='bogus' is invalid: Input should be 'fast' or 'realistic'"),
    ("prices-missing", RUN, {"RAYTROUPE_PRICE_TABLE": "{tmp}/nowhere.toml"},
     "RAYTROUPE_PRICE_TABLE: price table {tmp}/nowhere.toml: no such file"),
    ("prices-directory", RUN, {"RAYTROUPE_PRICE_TABLE": "{tmp}"},
     "RAYTROUPE_PRICE_TABLE: price table {tmp} is a directory, not a TOML file"),
    ("prices-not-toml", RUN, {"RAYTROUPE_PRICE_TABLE": "{tmp}/not.toml"},
     "RAYTROUPE_PRICE_TABLE: price table {tmp}/not.toml is not valid TOML"),
    ("prices-free", RUN, {"RAYTROUPE_PRICE_TABLE": "{tmp}/free.toml"},
     "models.claude-haiku-5-5.input: Input should be a valid decimal (got 'free')"),
    ("prices-negative", RUN, {"RAYTROUPE_PRICE_TABLE": "{tmp}/negative.toml"},
     "models.claude-haiku-5-5.output: Input should be greater than or equal to 0"),
    ("data-dir-is-a-file", RUN, {"RAYTROUPE_DATA_DIR": "{tmp}/a-file"},
     "RAYTROUPE_DATA_DIR: the Ledger's data dir {tmp}/a-file is a file, not a directory"),
    ("data-dir-truncated-journal", RUN, {"RAYTROUPE_DATA_DIR": "{tmp}/truncated"},
     "RAYTROUPE_DATA_DIR: the Ledger journal {tmp}/truncated/ledger.sqlite is damaged"),
    ("base-url-not-a-url", RUN, {"ANTHROPIC_BASE_URL": "not-a-url"},
     "ANTHROPIC_BASE_URL: 'not-a-url' is not an http(s) URL"),
    ("base-url-file", RUN, {"ANTHROPIC_BASE_URL": "file:///etc/passwd"},
     "ANTHROPIC_BASE_URL: 'file:///etc/passwd' is not an http(s) URL"),
    ("base-url-unresolvable", RUN, {"ANTHROPIC_BASE_URL": "https://no-such-host.invalid"},
     "ANTHROPIC_BASE_URL: 'https://no-such-host.invalid': the host 'no-such-host.invalid' "
     "does not resolve"),
    ("key-with-newline", RUN, {"ANTHROPIC_API_KEY": f"{KEY}\nmore"},
     "ANTHROPIC_API_KEY: the key contains a line break"),
    ("ledger-corrupt", ["ledger", "--data-dir", "{tmp}/corrupt"], {},
     "the Ledger journal {tmp}/corrupt/ledger.sqlite is damaged (file is not a database)"),
    ("ledger-truncated", ["ledger", "--data-dir", "{tmp}/truncated"], {},
     "the Ledger journal {tmp}/truncated/ledger.sqlite is damaged"),
    ("ledger-data-dir-is-a-file", ["ledger"], {"RAYTROUPE_DATA_DIR": "{tmp}/a-file"},
     "the Ledger's data dir {tmp}/a-file is a file, not a directory"),
]


def _scratch(tmp: Path) -> None:
    (tmp / "not.toml").write_text("input = = 3\n", encoding="utf-8")
    (tmp / "free.toml").write_text(f'[{PRICE}]\ninput = "free"\n', encoding="utf-8")
    (tmp / "negative.toml").write_text(f"[{PRICE}]\noutput = -0.5\n", encoding="utf-8")
    (tmp / "a-file").write_text("not a directory\n", encoding="utf-8")
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "ledger.sqlite").write_bytes(b"this is not SQLite\n" * 100)
    truncated_journal(tmp / "truncated")


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], str]]:
    """Every case's outcome and expected line, from one driver process."""
    tmp = tmp_path_factory.mktemp("bad-input")
    _scratch(tmp)
    cases = [{"args": [a.format(tmp=tmp) for a in args],
              "env": {k: v.format(tmp=tmp) for k, v in env.items()}}
             for _, args, env, _ in CASES]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAYTROUPE_", "ANTHROPIC_"))}
    # Short: Ray's socket paths under it must fit in 107 bytes, or a start fails differently.
    ray_tmp = Path(tempfile.gettempdir()) / f"rt-{uuid.uuid4().hex[:8]}"
    env.update(RAY_TMPDIR=str(ray_tmp), COLUMNS="200", PYTHONPATH=str(REPO))
    try:
        done = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("bad_input_driver.py"))],
            input=json.dumps(cases), capture_output=True, text=True, cwd=tmp, env=env,
            timeout=600, check=True)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {case[0]: (result, case[3].format(tmp=tmp))
            for case, result in zip(CASES, results, strict=True)}


@pytest.mark.parametrize("case", [case[0] for case in CASES])
def test_bad_input_is_one_line_naming_it_before_ray_starts(
        outcomes: dict[str, tuple[dict[str, Any], str]], case: str) -> None:
    outcome, message = outcomes[case]
    assert outcome["crashed"] is None, outcome["crashed"]
    assert outcome["code"] != 0
    lines = outcome["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), outcome["stderr"]
    assert message in lines[0]
    assert not outcome["ray_started"], "the input was checked only after Ray started"
    assert KEY not in outcome["stderr"]


@pytest.mark.parametrize(("values", "message"), [
    ({"anthropic_base_url": "http://127.0.0.1:notaport"}, "is not a valid URL"),
    ({"anthropic_base_url": "http://"}, "is not an http(s) URL"),
    ({"anthropic_base_url": "https://api.example .com"}, "is not an http(s) URL"),
    ({"anthropic_api_key": f"{KEY} "}, "ANTHROPIC_API_KEY: the key contains"),
    ({"anthropic_api_key": f"{KEY}\x00"}, "ANTHROPIC_API_KEY: the key contains"),
    ({"anthropic_api_key": f"{KEY}é"}, "ANTHROPIC_API_KEY: the key contains"),
    ({"rpm": 0, "otpm": -1}, "RAYTROUPE_RPM=0 is invalid: Input should be greater than 0; "
                             "RAYTROUPE_OTPM=-1 is invalid"),
])
def test_settings_name_every_bad_variable_and_never_the_key(
        values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(_env_file=None, **values)
    assert message in str(caught.value)
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    assert caught.value.__context__ is None  # the pydantic error holds the inputs, key included


def test_good_settings_still_pass(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, anthropic_base_url="http://127.0.0.1:9",
                        anthropic_api_key="  ", data_dir=tmp_path / "new", rpm=1)
    assert settings.uses_emulator and settings.rpm == 1
    assert Settings(_env_file=None, anthropic_base_url="").anthropic_base_url is None


def test_a_base_url_nothing_answers_at_is_named_in_the_error(ray_session: None,
                                                            tmp_path: Path) -> None:
    # It parses and resolves, so the settings pass; the call's error must say where it went
    # (it said only "connection_error"), and never the key.
    import dataclasses
    import socket

    import ray

    import cluster
    from actors.agent import spawn_agent
    from actors.errors import ConnectionFailed
    from actors.messages import AgentSpec, AskRequest
    from actors.retry_policy import RetryPolicy

    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        runtime = cluster.init(settings=Settings(anthropic_base_url=url, anthropic_api_key=KEY,
                                                 data_dir=tmp_path, _env_file=None),
                               namespace=f"bad-url-{uuid.uuid4().hex[:6]}")
        backend = dataclasses.replace(runtime.backend, retry=RetryPolicy(max_retries=0))
        agent = spawn_agent(AgentSpec(name="bad-url/agent", run_id="bad-url"), backend)
        with pytest.raises(ConnectionFailed) as failed:
            ray.get(agent.ask.remote(AskRequest(prompt="Hi", max_tokens=10)))
        ray.get(agent.flush.remote())
        totals = ray.get(runtime.ledger.totals.remote("bad-url"))
    assert f"ANTHROPIC_BASE_URL {url}" in str(failed.value)
    # Refused before a request could leave: not billed, and not counted as maybe billed.
    assert "possibly-billed" not in str(failed.value)
    assert totals.possibly_billed == 0 and totals.cost_usd == 0
    assert KEY not in str(failed.value) and KEY not in repr(failed.value)
