"""cluster.init: one set of singletons per namespace, the offline emulator, names shown."""

from __future__ import annotations

import uuid
from pathlib import Path

import ray
from ray.util.state import list_actors

import cluster
from actors.messages import AgentSpec, AskRequest
from cluster.settings import Settings


def test_init_twice_reuses_the_singletons_and_runs_offline_on_the_emulator_actor(
        ray_session: None, tmp_path: Path) -> None:
    namespace = f"rt-{uuid.uuid4().hex[:6]}"
    settings = Settings(data_dir=tmp_path, _env_file=None)
    first = cluster.init(settings=settings, namespace=namespace)
    second = cluster.init(settings=settings, namespace=namespace)

    assert first.limiter._actor_id == second.limiter._actor_id
    assert first.ledger._actor_id == second.ledger._actor_id
    assert first.emulator is not None and first.backend.base_url == second.backend.base_url
    assert first.backend.base_url.startswith("http://127.0.0.1:")

    agent = first.spawn(AgentSpec(name=f"{namespace}/demo/lead", run_id=namespace))
    reply = ray.get(agent.ask.remote(AskRequest(prompt="Say hello.")))
    assert reply.text and reply.usage.output_tokens > 0

    gcs = ray.get_runtime_context().gcs_address
    names = {(a.class_name, a.name) for a in list_actors(address=gcs, detail=True)
             if a.ray_namespace == namespace and a.state == "ALIVE"}
    assert {("Agent", f"{namespace}/demo/lead"), ("RateLimiter", "rate_limiter"),
            ("Ledger", "ledger"), ("EmulatorServer", "emulator")} <= names
