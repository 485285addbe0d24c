"""The bill (/_emulator/stats): exact to the token and the cent, counted per status; reset."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from actors.tiers import load_price_table
from emulator import Limits, run_emulator

HAIKU, SONNET = "claude-haiku-5-5", "claude-sonnet-5-5"
SECRET_KEY = "sk-ant-canary-0123456789"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def _cost(model: str, usage: Any) -> Decimal:
    split = usage.cache_creation
    return load_price_table().spec(model).cost_usd(
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_write_5m=split.ephemeral_5m_input_tokens,
        cache_write_1h=split.ephemeral_1h_input_tokens,
        cache_read=usage.cache_read_input_tokens)


def test_the_bill_equals_the_usage_the_client_saw_to_the_token_and_cent() -> None:
    system = [{"type": "text", "text": "Shared background. " * 120,
               "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    seen: list[tuple[str, Any]] = []
    with run_emulator(min_cacheable_tokens=64) as emu, anthropic.Anthropic(
            base_url=emu.base_url, api_key=SECRET_KEY, max_retries=0) as sdk:
        for model, text in [(HAIKU, "One."), (SONNET, "Two."), (HAIKU, "Three."), (HAIKU, "4")]:
            reply = sdk.messages.create(model=model, max_tokens=80, system=system,
                                        messages=_ask(text))
            seen.append((model, reply.usage))
        with sdk.messages.stream(model=SONNET, max_tokens=40, messages=_ask("Five.")) as stream:
            seen.append((SONNET, stream.get_final_message().usage))
        stats = emu.stats()
    assert SECRET_KEY not in json.dumps(stats)
    for model in (HAIKU, SONNET):
        usages = [u for m, u in seen if m == model]
        billed = stats["billed"][model]
        assert billed["requests"] == len(usages)
        assert billed["input_tokens"] == sum(u.input_tokens for u in usages)
        assert billed["output_tokens"] == sum(u.output_tokens for u in usages)
        assert billed["cache_write_1h"] == sum(u.cache_creation.ephemeral_1h_input_tokens
                                               for u in usages)
        assert billed["cache_read"] == sum(u.cache_read_input_tokens for u in usages)
        assert Decimal(billed["cost_usd"]) == sum(_cost(model, u) for u in usages)
    assert stats["billed"][HAIKU]["cache_read"] > 0
    assert Decimal(stats["total_cost_usd"]) == sum(_cost(m, u) for m, u in seen)


def test_statuses_are_counted_and_reset_clears_bill_cache_buckets_and_log() -> None:
    system = [{"type": "text", "text": "Cached. " * 100, "cache_control": {"type": "ephemeral"}}]
    with run_emulator(min_cacheable_tokens=64, limits=Limits(rpm=2)) as emu, \
            anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as sdk:
        first = sdk.messages.create(model=HAIKU, max_tokens=20, system=system, messages=_ask("a"))
        sdk.messages.create(model=HAIKU, max_tokens=20, system=system, messages=_ask("b"))
        with pytest.raises(anthropic.RateLimitError):
            sdk.messages.create(model=HAIKU, max_tokens=20, messages=_ask("c"))
        stats = emu.stats()
        assert stats["requests"] == 3 and len(emu.received) == 3
        assert stats["responses_by_status"] == {"200": 2, "429": 1}
        assert stats["rate_limited"]["requests"] == 1

        emu.reset()
        assert emu.stats()["requests"] == 0 and emu.stats()["billed"] == {}
        assert emu.received == []
        again = sdk.messages.create(model=HAIKU, max_tokens=20, system=system,
                                    messages=_ask("a"))  # the bucket is full again
    assert again.usage.cache_creation_input_tokens == first.usage.cache_creation_input_tokens > 0


def test_the_stats_and_reset_routes_speak_json() -> None:
    with run_emulator() as emu, anthropic.Anthropic(base_url=emu.base_url,
                                                    api_key=emu.api_key) as sdk:
        sdk.messages.create(model=HAIKU, max_tokens=10, messages=_ask("hi"))
        with _OPENER.open(emu.base_url + "/_emulator/stats") as response:
            over_http = json.loads(response.read())
        request = urllib.request.Request(emu.base_url + "/_emulator/reset", data=b"",
                                         method="POST")
        with _OPENER.open(request) as response:
            assert json.loads(response.read()) == {"ok": True}
        assert emu.stats()["requests"] == 0
    assert over_http["requests"] == 1 and over_http["billed"][HAIKU]["requests"] == 1
    assert "batches" in over_http and "rate_limits" in over_http


@pytest.mark.asyncio
async def test_peak_concurrency_counts_requests_in_flight_together() -> None:
    n = 6
    with run_emulator() as emu:
        arrived: list[int] = []
        gate: dict[str, asyncio.Event] = {}

        async def hold_until_all_arrive(body: dict[str, Any]) -> str:
            event = gate.setdefault("all", asyncio.Event())  # created on the emulator's loop
            arrived.append(1)
            if len(arrived) == n:
                event.set()
            await asyncio.wait_for(event.wait(), timeout=30)
            return "done"

        emu.set_responder(hold_until_all_arrive)
        async with anthropic.AsyncAnthropic(base_url=emu.base_url, api_key=emu.api_key,
                                            max_retries=0) as sdk:
            await asyncio.gather(*(sdk.messages.create(model=HAIKU, max_tokens=5,
                                                       messages=_ask(str(i)))
                                   for i in range(n)))
        stats = emu.stats()
    assert stats["peak_concurrency"] == n and stats["in_flight"] == 0


def test_the_received_log_is_bounded_to_the_latest_bodies() -> None:
    with run_emulator(received_log_size=2) as emu, anthropic.Anthropic(
            base_url=emu.base_url, api_key=emu.api_key) as sdk:
        for i in range(4):
            sdk.messages.create(model=HAIKU, max_tokens=5, messages=_ask(f"message {i}"))
        assert [b["messages"][0]["content"] for b in emu.received] == ["message 2", "message 3"]
