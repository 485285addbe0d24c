"""``raytroupe emulator``: clear refusals of bad options, and a served emulator that obeys them."""

from __future__ import annotations

import socket
import subprocess
import sys

import anthropic
import pytest
from typer.testing import CliRunner

from cluster.cli import build_app
from emulator.server import LISTENING, _read_line

app = build_app()  # as the console script does: every command, from one table
runner = CliRunner()


@pytest.mark.parametrize("args, says", [
    (["--fault-rate", "bogus=0.1"], "KIND one of overloaded"),
    (["--fault-rate", "overloaded"], "KIND=RATE"),
    (["--fault-rate", "overloaded=2"], "RATE must be from 0 to 1"),
    (["--fault-rate", "overloaded=0.7", "--fault-rate", "disconnect=0.7"], "at most one"),
    (["--profile", "slow"], "choose fast or realistic"),
    (["--rpm", "0"], "--rpm"),
    (["--port", "70000"], "--port"),
    (["--latency-ms", "-5"], "--latency-ms"),
], ids=["unknown fault", "no rate", "rate over 1", "rates sum over 1", "bad profile",
        "zero rpm", "port out of range", "negative latency"])
def test_bad_options_exit_2_with_one_clear_message(args: list[str], says: str) -> None:
    result = runner.invoke(app, ["emulator", *args])
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())


def test_a_busy_port_exits_1_naming_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(app, ["emulator", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_the_served_emulator_announces_its_url_and_applies_the_limits() -> None:
    with subprocess.Popen(
            [sys.executable, "-c", "from cluster.cli import main; main()", "emulator",
             "--port", "0", "--rpm", "1", "--latency-ms", "0"],
            stdout=subprocess.PIPE, text=True) as proc:
        _serve_and_check(proc)


def _serve_and_check(proc: subprocess.Popen[str]) -> None:
    try:
        line = _read_line(proc, 60)
        assert line.startswith(LISTENING + "http://127.0.0.1:")
        base_url = line[len(LISTENING):].strip()
        with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-x", max_retries=0) as sdk:
            hello = [{"role": "user", "content": "hello"}]
            sdk.messages.create(model="claude-haiku-5-5", max_tokens=5, messages=hello)
            with pytest.raises(anthropic.RateLimitError):
                sdk.messages.create(model="claude-haiku-5-5", max_tokens=5, messages=hello)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0  # SIGTERM is a clean stop
