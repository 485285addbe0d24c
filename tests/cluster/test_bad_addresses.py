"""Bad input around the runtime: one clear line, a non-zero exit (or 0 for a harmless
``down``), and no minutes of Ray retrying an address where nothing answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.errors import ConfigError
from cluster import discovery

BIN = Path(sys.executable).parent


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A Ray temp root of its own: no runtime is up there."""
    with tempfile.TemporaryDirectory(prefix="rt8-bad-", dir="/tmp") as temp:
        monkeypatch.setenv("RAY_TMPDIR", temp)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "disabled"}
        yield env


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens


def _raytroupe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "raytroupe"), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1:notaport", "ray://", "a b:1",
                                     "127.0.0.1:70000"])
def test_an_address_in_a_bad_format_is_one_line(address: str) -> None:
    with pytest.raises(ConfigError, match="is not a Ray address: use HOST:PORT"):
        discovery.resolve(address)


def test_a_dashboard_url_is_not_a_driver_address() -> None:
    with pytest.raises(ConfigError, match="is a dashboard URL"):
        discovery.resolve("http://127.0.0.1:8265")


def test_an_address_where_nothing_answers_fails_in_seconds(private_tmp: dict[str, str]) -> None:
    port = _closed_port()
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}': no Ray cluster answers there"):
        discovery.resolve(f"127.0.0.1:{port}")


def test_auto_with_no_cluster_up_says_so(private_tmp: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="--address auto: no running Ray cluster found"):
        discovery.resolve("auto")
    assert discovery.resolve(None) is None  # no address: start a private Ray


def test_a_stale_current_cluster_file_is_not_joined(private_tmp: dict[str, str]) -> None:
    ray_dir = Path(private_tmp["RAY_TMPDIR"]) / "ray"
    ray_dir.mkdir()
    (ray_dir / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")
    assert discovery.resolve(None) is None


def test_run_with_an_address_of_no_cluster_is_one_line_and_exit_2(
        private_tmp: dict[str, str]) -> None:
    port = _closed_port()
    done = _raytroupe(private_tmp, "run", "research", "q", "--address", f"127.0.0.1:{port}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: address '127.0.0.1:{port}': no Ray cluster answers there (nothing accepted a "
        "connection within 3 s)"]


def test_run_with_a_malformed_address_is_one_line(private_tmp: dict[str, str]) -> None:
    done = _raytroupe(private_tmp, "run", "research", "q", "--address", "head-node")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "'head-node' is not a Ray address" in done.stderr


def test_down_with_nothing_up_is_one_line_and_exit_0(private_tmp: dict[str, str]) -> None:
    done = _raytroupe(private_tmp, "down")
    assert done.returncode == 0
    assert done.stdout.strip().splitlines() == [
        "nothing to stop: no runtime started by `raytroupe up` under "
        f"{private_tmp['RAY_TMPDIR']}/ray"]


def test_status_with_nothing_up_is_one_line(private_tmp: dict[str, str]) -> None:
    done = _raytroupe(private_tmp, "status")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: no runtime is up (nothing found via RAY_ADDRESS or Ray's current-cluster "
        "file): start one with `raytroupe up`"]
