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
    names = {(a.class_name, a.name) for a in list_actors(address=gcs, detail=True, limit=10_000,
                                                  filters=[("state", "=", "ALIVE")])
             if a.ray_namespace == namespace and a.state == "ALIVE"}
    assert {("Agent", f"{namespace}/demo/lead"), ("RateLimiter", "rate_limiter"),
            ("Ledger", "ledger"), ("EmulatorServer", "emulator")} <= names


def test_the_singletons_outlive_a_dropped_runtime_until_ray_stops(
        ray_session: None, tmp_path: Path) -> None:
    """Two CLI runs in one process: the first drops its runtime, the second must find a live
    Ledger (a job-scoped named actor dies once no handle to it is left)."""
    import gc

    namespace = f"keep-{uuid.uuid4().hex[:6]}"
    runtime = cluster.init(settings=Settings(anthropic_base_url="http://127.0.0.1:9",
                                             data_dir=tmp_path, _env_file=None),
                           namespace=namespace)
    ledger_id = runtime.ledger._actor_id
    del runtime
    cluster.init(settings=Settings(anthropic_base_url="http://127.0.0.1:9", data_dir=tmp_path,
                                   _env_file=None), namespace=namespace)  # found, not created
    cluster.shutdown()          # this process did not start Ray, so Ray keeps running
    gc.collect()
    ledger = ray.get_actor("ledger", namespace=namespace)
    assert ledger._actor_id == ledger_id
    assert ray.get(ledger.totals.remote("none"), timeout=30).calls == 0
