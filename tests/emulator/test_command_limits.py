"""``raytroupe emulator`` models a realistic account by default: the API's limits and every
``anthropic-ratelimit-*`` header, read through the real SDK; ``--unlimited`` opts out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import anthropic
import pytest

from cluster.settings import Settings
from emulator.server import LISTENING, _read_line

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("requests", "input-tokens", "output-tokens", "tokens")


@contextmanager
def _served(*flags: str) -> Iterator[str]:
    """The base URL of ``raytroupe emulator FLAGS`` run as the user runs it, in a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYTROUPE_")}
    with subprocess.Popen(
            [sys.executable, "-c", "from cluster.cli import main; main()", "emulator",
             "--port", "0", "--latency-ms", "0", *flags],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
            text=True) as proc:
        try:
            line = _read_line(proc, 60)
            assert line.startswith(LISTENING), line
            yield line[len(LISTENING):].strip()
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _headers(base_url: str) -> Mapping[str, str]:
    with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-x", max_retries=0) as sdk:
        raw = sdk.messages.with_raw_response.create(
            model="claude-haiku-5-5", max_tokens=5,
            messages=[{"role": "user", "content": "hello"}])
    return raw.headers


def test_with_no_limit_flags_every_ratelimit_header_shows_the_settings_account() -> None:
    account = Settings(_env_file=None)
    with _served() as base_url:
        headers = _headers(base_url)

    for family in FAMILIES:
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{family}-{part}" in headers
    assert headers["anthropic-ratelimit-requests-limit"] == str(account.rpm)
    assert headers["anthropic-ratelimit-requests-remaining"] == str(account.rpm - 1)
    assert headers["anthropic-ratelimit-input-tokens-limit"] == str(account.itpm)
    assert headers["anthropic-ratelimit-output-tokens-limit"] == str(account.otpm)
    assert headers["anthropic-ratelimit-tokens-limit"] == str(account.itpm + account.otpm)


@pytest.mark.slow
def test_one_flag_changes_one_limit_and_unlimited_sends_no_ratelimit_headers() -> None:
    with _served("--rpm", "50") as base_url:
        headers = _headers(base_url)
    assert headers["anthropic-ratelimit-requests-limit"] == "50"
    assert headers["anthropic-ratelimit-input-tokens-limit"] == str(Settings(_env_file=None).itpm)

    with _served("--unlimited") as base_url:
        headers = _headers(base_url)
    assert not [name for name in headers if name.startswith("anthropic-ratelimit-")]


def test_unlimited_with_a_limit_is_one_clear_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from cluster.cli import main; main()", "emulator",
         "--unlimited", "--max-concurrency", "5"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert "--unlimited cannot be combined with --max-concurrency" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
