"""The Agent actor end to end: real Ray, the real SDK, the emulator, the Ledger and limiter."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import ray
from pydantic import ValidationError

from actors.errors import BudgetExceeded, ConfigError, PromptTooLongError, RequestRejected
from actors.messages import AgentSpec, AskRequest, Reply, TextDelta
from emulator import ScriptedError
from tests.actors.agent_fixtures import Rig, bill, ledger_tokens
from tests.actors.tool_fixtures import MEET_DIR, explode, lookup


def _ask(agent: Any, prompt: str = "Name three uses of an actor model.", **kw: Any) -> Reply:
    return ray.get(agent.ask.remote(AskRequest(prompt=prompt, **kw)))


def test_ask_replies_and_the_ledger_equals_the_bill(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("haiku")
    replies = [_ask(agent, f"Question {i}: why do agents need limits?") for i in range(3)]
    ray.get(agent.flush.remote())

    assert all(r.text and r.usage.output_tokens > 0 for r in replies)
    tokens, usd = bill(rig.emulator.stats())
    totals = rig.ledger_totals(run_id)
    assert ledger_tokens(totals) == tokens
    assert totals.cost_usd == usd == sum(r.cost_usd for r in replies)
    assert totals.calls == 3


def test_stream_yields_deltas_then_the_reply(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("sonnet")
    items = [ray.get(ref) for ref in agent.stream.remote(AskRequest(prompt="Tell a story."))]
    ray.get(agent.flush.remote())

    deltas, reply = items[:-1], items[-1]
    assert deltas and all(isinstance(d, TextDelta) for d in deltas)
    assert isinstance(reply, Reply) and reply.text == "".join(d.text for d in deltas)
    assert reply.ttft_s is not None and reply.tier == "sonnet"
    tokens, usd = bill(rig.emulator.stats())
    assert ledger_tokens(rig.ledger_totals(run_id)) == tokens
    assert reply.cost_usd == usd


def test_tools_run_concurrently_and_a_failing_tool_is_reported_to_the_model(rig: Rig) -> None:
    meet = uuid.uuid4().hex  # the two tools wait for each other: run in turn, they time out

    def responder(body: dict[str, Any]) -> Any:
        last = body["messages"][-1]["content"]
        if isinstance(last, list) and last and last[0].get("type") == "tool_result":
            return "results: " + " | ".join(
                f"{b.get('is_error', False)}:{b['content']}" for b in last)
        return [{"type": "tool_use", "name": "lookup", "input": {"city": "Oslo", "meet": meet}},
                {"type": "tool_use", "name": "explode", "input": {"reason": "boom",
                                                                  "meet": meet}}]

    rig.emulator.set_responder(responder)
    try:
        agent, _ = rig.agent("haiku", tools=(lookup, explode))
        reply = _ask(agent, "weather?")
    finally:
        rig.emulator.set_responder(None)
        for marker in MEET_DIR.glob(f"{meet}.*"):
            marker.unlink()
    assert reply.calls == 2 and reply.stop_reason == "end_turn"
    assert "False:sunny in Oslo" in reply.text
    assert "True:explode failed: RuntimeError: boom" in reply.text


def test_prompt_over_the_context_window_fails_before_any_http_call(rig: Rig) -> None:
    agent, _ = rig.agent("haiku")
    before = rig.emulator.stats()["requests"]
    with pytest.raises(PromptTooLongError, match="prompt is too long for claude-haiku"):
        _ask(agent, "word " * 300_000)
    assert rig.emulator.stats()["requests"] == before


def test_an_unknown_tier_is_refused_when_the_agent_is_described() -> None:
    with pytest.raises(ValidationError, match="tier"):
        AgentSpec(name="x", tier="gpt")  # type: ignore[arg-type]


def test_budget_stops_the_run_before_the_call_that_would_cross_it(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("opus")
    cap = Decimal("0.02")
    ray.get(rig.runtime.ledger.set_budget.remote(run_id, cap))
    sent = 0
    with pytest.raises(BudgetExceeded, match="budget"):
        for _ in range(100):
            _ask(agent, "Write a paragraph.", max_tokens=200)
            sent += 1
    ray.get(agent.flush.remote())
    _, usd = bill(rig.emulator.stats())
    assert sent >= 1
    assert usd <= cap
    assert rig.emulator.stats()["requests"] == sent
    assert rig.ledger_totals(run_id).cost_usd == usd


def test_max_tokens_over_the_model_maximum_fails_before_any_http_call(rig: Rig) -> None:
    agent, _ = rig.agent("sonnet")
    before = rig.emulator.stats()["requests"]
    with pytest.raises(ConfigError, match="max_tokens 10,000,000 is over claude-sonnet-5-5"):
        _ask(agent, "hi", max_tokens=10_000_000)
    assert rig.emulator.stats()["requests"] == before


def test_api_errors_arrive_as_our_own_types_and_are_not_retried(rig: Rig) -> None:
    def reject(body: dict[str, Any]) -> Any:
        raise ScriptedError("invalid_request_error", "messages.0.content: too spicy")

    rig.emulator.set_responder(reject)
    try:
        agent, _ = rig.agent("haiku")
        with pytest.raises(RequestRejected) as caught:
            _ask(agent, "hi")
    finally:
        rig.emulator.set_responder(None)
    error = caught.value
    assert (error.status, error.error_type, error.attempts) == (400, "invalid_request_error", 1)
    assert "too spicy" in str(error) and error.request_id.startswith("req_")
    assert "sk-ant" not in repr(error) + str(error)


def test_overloaded_calls_are_retried_and_every_attempt_is_recorded(rig: Rig) -> None:
    rig.emulator.reset()
    seen: list[int] = []

    def flaky(body: dict[str, Any]) -> Any:
        seen.append(1)
        if len(seen) <= 2:
            raise ScriptedError("overloaded_error", headers={"retry-after-ms": "10"})
        return "finally"

    rig.emulator.set_responder(flaky)
    try:
        agent, run_id = rig.agent("haiku")
        reply = _ask(agent, "hi")
        ray.get(agent.flush.remote())
    finally:
        rig.emulator.set_responder(None)
    assert reply.text == "finally" and reply.attempts == 3
    totals = rig.ledger_totals(run_id)
    assert (totals.calls, totals.attempts, totals.errors, totals.retries) == (1, 3, 2, 2)
    tokens, usd = bill(rig.emulator.stats())
    assert ledger_tokens(totals) == tokens and totals.cost_usd == usd


def test_memory_is_compacted_by_a_haiku_summary_that_is_billed(rig: Rig) -> None:
    rig.emulator.reset()
    agent, run_id = rig.agent("sonnet", memory_budget_tokens=60)
    for i in range(4):
        _ask(agent, f"Fact {i}: the sky was a different colour on day {i}. " * 3, remember=True)
    ray.get(agent.flush.remote())
    by_tier = {r.key: r for r in ray.get(rig.runtime.ledger.rollup.remote(run_id, by="tier"))}
    assert by_tier["haiku"].calls >= 1
    tokens, _ = bill(rig.emulator.stats())
    assert ledger_tokens(rig.ledger_totals(run_id)) == tokens


def test_a_cached_system_prompt_is_written_once_then_read_and_billed_exactly(rig: Rig) -> None:
    rig.emulator.reset()
    instructions = "You review contracts. Rules: " + " ".join(
        f"rule {i}: flag clause {i} when it shifts liability." for i in range(400))
    agent, run_id = rig.agent("sonnet", system=instructions)
    first = _ask(agent, "Review clause 1.", cache_system=True)
    second = _ask(agent, "Review clause 2.", cache_system=True)

    assert first.usage.cache_write_5m > 1024 and first.usage.cache_read == 0
    assert second.usage.cache_read == first.usage.cache_write_5m
    assert second.usage.cache_write_5m == 0
    ray.get(agent.flush.remote())  # replies are journaled locally; the Ledger hears in batches
    tokens, usd = bill(rig.emulator.stats())
    totals = rig.ledger_totals(run_id)
    assert ledger_tokens(totals) == tokens and totals.cost_usd == usd
    assert second.cost_usd < first.cost_usd
