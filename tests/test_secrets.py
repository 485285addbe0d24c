"""The API key appears nowhere: reprs, errors, the journal, Ray's state API and logs, the CLI.

A canary key is used for real calls (to the emulator, which accepts any key) and for a call the
emulator refuses with 401, then every place a key has leaked in other systems is searched
(``docs/reliability.md`` §4).
"""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

import pytest
import ray
from ray.util.state import list_actors, list_tasks
from typer.testing import CliRunner

import cluster
from actors.errors import RequestRejected
from actors.messages import AgentSpec, AskRequest
from cluster.cli import build_app
from cluster.settings import Settings
from emulator import EmulatorConfig, run_emulator

CANARY = "sk-ant-api03-CANARY" + uuid.uuid4().hex


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_the_key_never_leaks(ray_session: None, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    with run_emulator() as emu, run_emulator(EmulatorConfig(api_keys=["another-key"])) as strict:
        settings = Settings(anthropic_base_url=emu.base_url, data_dir=tmp_path, _env_file=None)
        assert not settings.uses_emulator
        runtime = cluster.init(settings=settings, namespace=f"leak-{uuid.uuid4().hex[:6]}")
        agent = runtime.spawn(AgentSpec(name="leak/test/worker", run_id="leak"))
        reply = ray.get(agent.ask.remote(AskRequest(prompt="Hello")))
        stream = [ray.get(r) for r in agent.stream.remote(AskRequest(prompt="Hi"))]
        from dataclasses import replace

        from actors.agent import spawn_agent
        refused = spawn_agent(AgentSpec(name="leak/test/refused", run_id="leak"),
                              replace(runtime.backend, base_url=strict.base_url))
        with pytest.raises(RequestRejected) as caught:
            ray.get(refused.ask.remote(AskRequest(prompt="Hello")))
        ray.get([agent.flush.remote(), refused.flush.remote()])
        stats = str(emu.stats()) + str(strict.stats())

    assert caught.value.status == 401
    gcs = ray.get_runtime_context().gcs_address
    surfaces = {
        "reprs": repr(settings) + str(settings) + repr(runtime.backend) + repr(reply)
        + repr(stream),
        "error": str(caught.value) + repr(caught.value),
        "pickled error": pickle.dumps(caught.value.cause).decode("latin-1"),
        "state api": str(list_actors(address=gcs, detail=True, limit=10_000))
        + str(list_tasks(address=gcs, detail=True)),
        "emulator stats": stats,
    }
    for name, text in surfaces.items():
        assert CANARY not in text, f"the key leaked into {name}"

    journal = b"".join(p.read_bytes() for p in _files_under(tmp_path))
    assert journal and CANARY.encode() not in journal
    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path())
    for log in _files_under(logs_dir):
        assert CANARY.encode() not in log.read_bytes(), f"the key leaked into {log.name}"

    result = CliRunner().invoke(build_app(), ["ledger", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "leak" in result.output
    assert CANARY not in result.output
