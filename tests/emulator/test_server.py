"""Starting and stopping: the in-process thread server, the subprocess, and their handles."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading

import anthropic
import pytest
from pydantic import ValidationError

from emulator import EmulatorConfig, EmulatorProcess, Limits, run_emulator

HELLO = [{"role": "user", "content": "hello"}]


def _emulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "raytroupe-emulator"]


def test_run_emulator_serves_on_loopback_and_stops_cleanly() -> None:
    with run_emulator(latency_s=0) as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert emu.config.latency_s == 0
        assert len(_emulator_threads()) == 1
    assert _emulator_threads() == []
    with socket.socket() as probe:  # the port is closed once the block ends
        assert probe.connect_ex(("127.0.0.1", int(emu.base_url.rsplit(":", 1)[1]))) != 0


def test_overrides_are_validated() -> None:
    with pytest.raises(ValidationError, match="profile"):
        with run_emulator(profile="instant"):
            pass


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match="failed to start"):
            with run_emulator(port=port):
                pass
    assert _emulator_threads() == []


def test_binding_off_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="emulator"):
        EmulatorConfig(host="0.0.0.0")
        EmulatorConfig(host="127.0.0.1")
        EmulatorConfig(host="::1")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "emulator bound to 0.0.0.0, not loopback"]


def test_the_subprocess_emulator_takes_its_config_and_reports_its_bill() -> None:
    with EmulatorProcess(limits=Limits(rpm=1), latency_s=0) as emu, anthropic.Anthropic(
            base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as sdk:
        assert emu.base_url.startswith("http://127.0.0.1:")
        sdk.messages.create(model="claude-haiku-5-5", max_tokens=10, messages=HELLO)
        with pytest.raises(anthropic.RateLimitError):
            sdk.messages.create(model="claude-haiku-5-5", max_tokens=10, messages=HELLO)
        stats = emu.stats()
        assert stats["responses_by_status"] == {"200": 1, "429": 1}
        assert [b["max_tokens"] for b in emu.received] == [10, 10]
        emu.reset()
        assert emu.stats()["requests"] == 0
        with pytest.raises(TypeError, match="subprocess"):
            emu.set_responder(lambda body: "x")
        proc = emu._proc
    assert proc is not None and proc.poll() is not None


def test_python_m_emulator_refuses_a_bad_config() -> None:
    done = subprocess.run([sys.executable, "-m", "emulator", "--config-json",
                           '{"latency_s": -1}'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "latency_s" in done.stderr
