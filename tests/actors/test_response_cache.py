"""The response cache end to end: real Ray, the real SDK, the emulator, SQLite in the data dir."""

from __future__ import annotations

import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import ray
from pydantic import SecretStr, ValidationError

from actors.agent import spawn_agent
from actors.errors import ConfigError
from actors.messages import AgentSpec, AskRequest, Reply, TextDelta
from cluster.settings import Settings
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens
from tests.actors.redis_server import running_redis


def _ask(agent: Any, prompt: str, **kw: Any) -> Reply:
    return ray.get(agent.ask.remote(AskRequest(prompt=prompt, **kw)))


def _prompt() -> str:
    """A question no other test asks, so no other test's entry can answer it."""
    return f"Question {uuid.uuid4().hex}: why cache replies?"


def test_a_repeated_ask_is_a_free_hit_and_the_ledger_still_equals_the_bill(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("sonnet", cache=True, cache_ttl="1h")
    prompt = _prompt()
    first, second = _ask(agent, prompt), _ask(agent, prompt)
    ray.get(agent.flush.remote())

    assert rig.emulator.stats()["requests"] == 1
    assert second.text == first.text and second.content == first.content
    assert (first.cache_hits, second.cache_hits) == (0, 1)
    assert second.cost_usd == 0 and second.saved_usd == first.cost_usd > 0
    tokens, usd = bill(rig.emulator.stats())
    totals = rig.ledger_totals(run_id)
    assert ledger_tokens(totals) == tokens and totals.cost_usd == usd == first.cost_usd
    assert (totals.calls, totals.cache_hits, totals.saved_usd) == (2, 1, first.cost_usd)


def test_stream_replays_a_hit_as_deltas(rig: Rig) -> None:
    agent, _ = rig.agent("haiku", cache=True)
    request = AskRequest(prompt=_prompt(), max_tokens=64)
    live = [ray.get(ref) for ref in agent.stream.remote(request)]
    replay = [ray.get(ref) for ref in agent.stream.remote(request)]

    deltas, reply = replay[:-1], replay[-1]
    assert len(deltas) > 1 and all(isinstance(d, TextDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == reply.text == live[-1].text
    assert reply.cache_hits == 1 and reply.cost_usd == 0


def test_the_cache_is_off_by_default_and_the_key_covers_every_parameter(rig: Rig) -> None:
    rig.emulator.reset()
    plain, _ = rig.agent("haiku")
    prompt = _prompt()
    assert [_ask(plain, prompt).cache_hits for _ in range(2)] == [0, 0]
    cached, _ = rig.agent("haiku", cache=True)
    variants = [{}, {"max_tokens": 100}, {"system": "Be terse."}, {"stop_sequences": ("END",)}]
    first = [_ask(cached, prompt, **v).cache_hits for v in variants]
    again = [_ask(cached, prompt, **v).cache_hits for v in variants]
    assert first == [0] * 4 and again == [1] * 4
    assert _ask(plain, prompt, cache=True).cache_hits == 1  # per call, on an agent without it
    assert _ask(cached, prompt, cache=False).cache_hits == 0


def test_an_entry_never_crosses_api_keys_unless_sharing_is_configured(rig: Rig) -> None:
    prompt, run_id = _prompt(), f"run-{uuid.uuid4().hex[:8]}"

    def agent_of(key: str, shared: bool) -> Any:
        backend = replace(rig.runtime.backend, api_key=SecretStr(key), cache_shared=shared)
        spec = AgentSpec(name=f"{run_id}/test/{key}-{shared}", run_id=run_id, cache=True)
        return spawn_agent(spec, backend)

    assert _ask(agent_of("sk-first-key", False), prompt).cache_hits == 0
    assert _ask(agent_of("sk-second-key", False), prompt).cache_hits == 0
    assert _ask(agent_of("sk-first-key", True), prompt).cache_hits == 0  # shared: a new entry
    assert _ask(agent_of("sk-second-key", True), prompt).cache_hits == 1


def test_an_unknown_ttl_unit_is_one_clear_error_before_any_call() -> None:
    with pytest.raises(ValidationError, match=r"cache TTL '3y' is not a positive number"):
        AskRequest(prompt="hi", cache_ttl="3y")
    with pytest.raises(ValidationError, match=r"cache TTL 'soon'"):
        AgentSpec(name="a", cache=True, cache_ttl="soon")
    assert AgentSpec(name="a", cache_ttl="7d").cache_ttl == "7d"
    with pytest.raises(ConfigError, match=r"RAYTROUPE_CACHE_TTL: cache TTL '2 days'"):
        Settings(cache_ttl="2 days", _env_file=None)


def test_the_runtime_default_applies_to_agents_that_do_not_say(rig: Rig) -> None:
    prompt, run_id = _prompt(), f"run-{uuid.uuid4().hex[:8]}"
    backend = replace(rig.runtime.backend, cache=True, cache_ttl="1h")
    quiet = spawn_agent(AgentSpec(name=f"{run_id}/test/quiet", run_id=run_id), backend)
    refusing = spawn_agent(AgentSpec(name=f"{run_id}/test/no", run_id=run_id, cache=False),
                           backend)
    assert [_ask(quiet, prompt).cache_hits for _ in range(2)] == [0, 1]
    assert _ask(refusing, prompt).cache_hits == 0


def test_a_hit_costs_nothing_in_a_budgeted_run(rig: Rig) -> None:
    agent, run_id = rig.agent("haiku", cache=True)
    ray.get(rig.runtime.ledger.set_budget.remote(run_id, Decimal("1")))
    prompt = _prompt()
    first, second = _ask(agent, prompt), _ask(agent, prompt)
    status = ray.get(rig.runtime.ledger.budget.remote(run_id))
    assert second.cache_hits == 1 and status.spent_usd == first.cost_usd


def test_agents_share_a_redis_store(rig: Rig, tmp_path: Path) -> None:
    with running_redis(tmp_path) as url:
        prompt, run_id = _prompt(), f"run-{uuid.uuid4().hex[:8]}"
        backend = replace(rig.runtime.backend, cache_url=url)
        agents = [spawn_agent(AgentSpec(name=f"{run_id}/test/r{i}", run_id=run_id, cache=True),
                              backend) for i in range(2)]
        first, second = (_ask(agent, prompt) for agent in agents)
        ray.get([a.flush.remote() for a in agents])
        assert (first.cache_hits, second.cache_hits) == (0, 1)
        assert rig.ledger_totals(run_id).saved_usd == first.cost_usd
