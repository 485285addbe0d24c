"""Prompt-cache accounting on a fake clock: writes, reads, TTLs, lookback, the invariant;
then the same through the SDK over HTTP."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic
from anthropic.types import Message

from emulator import EmulatorConfig
from emulator.prompt_cache import CachePlan, PromptCache, validate_breakpoints
from emulator.state import EmulatorState
from emulator.tokens import Segment
from tests.emulator.loopback_app import served
from tests.fake_clock import FakeClock

MIN = 1024


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> PromptCache:
    return PromptCache(clock=clock)


def seg(tokens: int, name: str, ttl: str | None = None) -> Segment:
    return Segment(tokens, name.encode(), ttl)  # type: ignore[arg-type]


def plan(cache: PromptCache, segments: list[Segment], *, auto: dict[str, object] | None = None,
         key: str = "k", model: str = "claude-sonnet-5-5", commit: bool = True) -> CachePlan:
    result = cache.plan(key=key, model=model, segments=segments, auto=auto, min_cacheable=MIN)
    assert (result.input_tokens + result.cache_write_5m + result.cache_write_1h
            + result.cache_read) == sum(s.tokens for s in segments)
    if commit:
        result.commit()
    return result


def split(p: CachePlan) -> tuple[int, int, int, int]:
    return (p.input_tokens, p.cache_write_5m, p.cache_write_1h, p.cache_read)


def test_write_then_read_the_same_prefix(cache: PromptCache) -> None:
    request = [seg(1500, "system", "5m"), seg(40, "question")]
    assert split(plan(cache, request)) == (40, 1500, 0, 0)
    assert split(plan(cache, request)) == (40, 0, 0, 1500)


def test_no_breakpoint_means_no_caching(cache: PromptCache) -> None:
    request = [seg(5000, "system"), seg(40, "question")]
    assert split(plan(cache, request)) == (5040, 0, 0, 0)
    assert split(plan(cache, request)) == (5040, 0, 0, 0)


def test_entries_become_visible_only_when_committed(cache: PromptCache) -> None:
    request = [seg(1500, "system", "5m"), seg(40, "question")]
    first = plan(cache, request, commit=False)
    parallel = plan(cache, request, commit=False)
    assert split(first) == split(parallel) == (40, 1500, 0, 0)  # both miss, both write
    first.commit()
    first.commit()  # idempotent
    parallel.commit()
    assert split(plan(cache, request)) == (40, 0, 0, 1500)


def test_prefix_below_the_minimum_is_processed_uncached(cache: PromptCache) -> None:
    request = [seg(MIN - 1, "system", "5m"), seg(40, "question")]
    assert split(plan(cache, request)) == (MIN - 1 + 40, 0, 0, 0)
    assert split(plan(cache, request)) == (MIN - 1 + 40, 0, 0, 0)


def test_a_short_first_breakpoint_joins_the_next_ones_write(cache: PromptCache) -> None:
    request = [seg(600, "tools", "5m"), seg(900, "system", "5m"), seg(40, "question")]
    assert split(plan(cache, request)) == (40, 1500, 0, 0)
    assert split(plan(cache, request)) == (40, 0, 0, 1500)


def test_one_hour_and_five_minute_runs_are_split(cache: PromptCache) -> None:
    request = [seg(2000, "tools", "1h"), seg(1500, "system", "5m"), seg(100, "question")]
    assert split(plan(cache, request)) == (100, 1500, 2000, 0)
    assert split(plan(cache, request)) == (100, 0, 0, 3500)


def test_a_short_run_ending_at_a_one_hour_breakpoint_counts_as_one_hour(
        cache: PromptCache) -> None:
    request = [seg(500, "tools", "5m"), seg(700, "system", "1h"), seg(10, "q")]
    assert split(plan(cache, request)) == (10, 0, 1200, 0)


def test_a_changed_tail_reads_the_shared_prefix_and_writes_the_rest(cache: PromptCache) -> None:
    plan(cache, [seg(2000, "system", "5m"), seg(1200, "doc-a", "5m"), seg(30, "q")])
    again = plan(cache, [seg(2000, "system", "5m"), seg(1300, "doc-b", "5m"), seg(30, "q")])
    assert split(again) == (30, 1300, 0, 2000)


def test_a_changed_head_misses_everything(cache: PromptCache) -> None:
    plan(cache, [seg(2000, "system", "5m"), seg(1200, "doc", "5m"), seg(30, "q")])
    other = plan(cache, [seg(2000, "system-v2", "5m"), seg(1200, "doc", "5m"), seg(30, "q")])
    assert split(other) == (30, 3200, 0, 0)


def test_five_minute_entries_expire_and_hits_refresh_them(
        cache: PromptCache, clock: FakeClock) -> None:
    request = [seg(1500, "system", "5m"), seg(40, "q")]
    plan(cache, request)
    clock.t = 299.0
    assert split(plan(cache, request)) == (40, 0, 0, 1500)  # hit: lives until 599
    clock.t = 598.0
    assert split(plan(cache, request)) == (40, 0, 0, 1500)  # lives until 898
    clock.t = 898.0
    assert split(plan(cache, request)) == (40, 1500, 0, 0)  # expired: written again


def test_one_hour_entries_outlive_five_minutes(cache: PromptCache, clock: FakeClock) -> None:
    request = [seg(2000, "tools", "1h"), seg(1500, "system", "5m"), seg(100, "q")]
    plan(cache, request)
    clock.t = 301.0
    assert split(plan(cache, request)) == (100, 1500, 0, 2000)  # 5m part gone, 1h still there
    clock.t = 301.0 + 3600.0
    assert split(plan(cache, request)) == (100, 1500, 2000, 0)


def test_automatic_breakpoint_goes_on_the_last_block(cache: PromptCache) -> None:
    turn_1 = [seg(1500, "system"), seg(100, "user-1")]
    assert split(plan(cache, turn_1, auto={"type": "ephemeral"})) == (0, 1600, 0, 0)
    turn_2 = [*turn_1, seg(50, "assistant-1"), seg(60, "user-2")]
    # The conversation grew by two blocks: lookback finds turn 1's entry.
    assert split(plan(cache, turn_2, auto={"type": "ephemeral"})) == (0, 110, 0, 1600)


def test_automatic_breakpoint_with_one_hour_ttl(cache: PromptCache) -> None:
    request = [seg(1500, "system"), seg(100, "user")]
    auto = {"type": "ephemeral", "ttl": "1h"}
    assert split(plan(cache, request, auto=auto)) == (0, 0, 1600, 0)


def test_lookback_reaches_twenty_blocks_and_no_further(cache: PromptCache) -> None:
    plan(cache, [seg(2000, "system", "5m"), seg(10, "q")])
    head = [seg(2000, "system")]  # same content, no marker of its own this time
    near = [*head, *(seg(10, f"turn-{i}") for i in range(18)), seg(10, "last", "5m")]
    # The breakpoint block plus 19 before it: the entry after "system" is the 20th boundary.
    assert split(plan(cache, near, commit=False)) == (0, 190, 0, 2000)
    far = [*head, *(seg(10, f"turn-{i}") for i in range(19)), seg(10, "last", "5m")]
    assert split(plan(cache, far, commit=False)) == (0, 2200, 0, 0)


def test_caches_are_separate_per_key_and_model(cache: PromptCache) -> None:
    request = [seg(1500, "system", "5m"), seg(40, "q")]
    plan(cache, request, key="k1", model="m1")
    assert split(plan(cache, request, key="k2", model="m1", commit=False))[3] == 0
    assert split(plan(cache, request, key="k1", model="m2", commit=False))[3] == 0
    assert split(plan(cache, request, key="k1", model="m1", commit=False))[3] == 1500


def test_reset_forgets_everything(cache: PromptCache) -> None:
    request = [seg(1500, "system", "5m"), seg(40, "q")]
    plan(cache, request)
    cache.reset()
    assert split(plan(cache, request)) == (40, 1500, 0, 0)


def test_empty_input_plans_zero(cache: PromptCache) -> None:
    assert split(plan(cache, [], auto={"type": "ephemeral"})) == (0, 0, 0, 0)


def test_the_four_counts_always_sum_to_the_input(cache: PromptCache, clock: FakeClock) -> None:
    rng = random.Random(7)
    pool = [f"block-{i}" for i in range(6)]
    for _ in range(400):
        segments = [seg(rng.randint(0, 900), rng.choice(pool),
                        rng.choice([None, None, None, "5m", "1h"]))
                    for _ in range(rng.randint(0, 8))]
        while sum(1 for s in segments if s.cache_ttl) > 4:
            segments.pop(0)
        auto: dict[str, object] | None = rng.choice([None, {"type": "ephemeral"}])
        try:
            validate_breakpoints(segments, auto)
        except ValueError:
            auto = None  # a fifth breakpoint would be a 400, never a plan
        plan(cache, segments, auto=auto, commit=rng.random() < 0.8)  # plan() checks the sum
        clock.t += rng.uniform(0, 120)


def test_more_than_four_breakpoints_is_refused() -> None:
    five = [seg(10, f"b{i}", "5m") for i in range(5)]
    with pytest.raises(ValueError, match=r"A maximum of 4 blocks with cache_control may be "
                                         r"provided\. Found 5\."):
        validate_breakpoints(five, None)
    four = five[:4]
    validate_breakpoints(four, None)
    validate_breakpoints(four, {"type": "ephemeral"})  # lands on an already-marked block
    with pytest.raises(ValueError, match="Found 5"):
        validate_breakpoints([*four, seg(10, "tail")], {"type": "ephemeral"})


def test_automatic_cache_control_must_be_well_formed() -> None:
    blocks = [seg(10, "a")]
    with pytest.raises(ValueError, match="ttl"):
        validate_breakpoints(blocks, {"type": "ephemeral", "ttl": "10m"})
    with pytest.raises(ValueError, match="ephemeral"):
        validate_breakpoints(blocks, {"type": "persistent"})


# --- through the SDK, over HTTP ------------------------------------------------------------

HAIKU = "claude-haiku-5-5"
SYSTEM_TEXT = "You review pull requests for an actor-model runtime, carefully and kindly. " * 40
TOOL = {"name": "lookup", "description": "Look a symbol up in the codebase. " * 60,
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
QUESTION = [{"role": "user", "content": "Is this change safe?"}]


@asynccontextmanager
async def caching(clock: FakeClock) -> AsyncIterator[tuple[AsyncAnthropic, EmulatorState]]:
    """An emulator whose prompt cache runs on ``clock``, and an SDK client of it."""
    async with served(EmulatorConfig(latency_s=0.0, min_cacheable_tokens=100)) as (url, state):
        state.cache = PromptCache(clock=clock)
        async with AsyncAnthropic(base_url=url, api_key="sk-test", max_retries=0,
                                  _strict_response_validation=True) as client:
            yield client, state


def system(ttl: str = "5m") -> list[dict[str, Any]]:
    return [{"type": "text", "text": SYSTEM_TEXT, "cache_control": {"type": "ephemeral",
                                                                   "ttl": ttl}}]


def tools(ttl: str = "1h") -> list[dict[str, Any]]:
    return [{**TOOL, "cache_control": {"type": "ephemeral", "ttl": ttl}}]


def usage_split(message: Message) -> tuple[int, int, int, int]:
    usage = message.usage
    assert usage.cache_creation is not None
    assert usage.cache_creation_input_tokens == (usage.cache_creation.ephemeral_5m_input_tokens
                                                 + usage.cache_creation.ephemeral_1h_input_tokens)
    return (usage.input_tokens, usage.cache_creation.ephemeral_5m_input_tokens,
            usage.cache_creation.ephemeral_1h_input_tokens, usage.cache_read_input_tokens or 0)


@pytest.mark.asyncio
async def test_sdk_sees_a_write_then_a_read(clock: FakeClock) -> None:
    async with caching(clock) as (client, state):
        total = (await client.messages.count_tokens(
            model=HAIKU, system=system(), messages=QUESTION)).input_tokens  # type: ignore[arg-type]
        first = await client.messages.create(model=HAIKU, max_tokens=64, system=system(),
                                             messages=QUESTION)  # type: ignore[arg-type]
        rest, written, _, _ = usage_split(first)
        assert written > 0 and rest > 0 and rest + written == total
        second = await client.messages.create(model=HAIKU, max_tokens=64, system=system(),
                                              messages=QUESTION)  # type: ignore[arg-type]
        assert usage_split(second) == (rest, 0, 0, written)
        billed = state.stats.snapshot()["billed"][HAIKU]
        assert (billed["cache_write_5m"], billed["cache_read"]) == (written, written)


@pytest.mark.asyncio
async def test_sdk_sees_one_hour_and_five_minute_writes_apart_and_their_expiry(
        clock: FakeClock) -> None:
    async with caching(clock) as (client, _):
        async def ask() -> tuple[int, int, int, int]:
            reply = await client.messages.create(model=HAIKU, max_tokens=64, tools=tools("1h"),
                                                 system=system("5m"),  # type: ignore[arg-type]
                                                 messages=QUESTION)  # type: ignore[arg-type]
            return usage_split(reply)

        rest, in_5m, in_1h, read = await ask()
        assert in_5m > 0 and in_1h > 0 and read == 0
        assert await ask() == (rest, 0, 0, in_1h + in_5m)
        clock.t += 301  # the 5-minute entry refreshed at t=0 is gone; the 1-hour one is not
        assert await ask() == (rest, in_5m, 0, in_1h)
        clock.t += 3600  # 1 h after its last refresh (t=301): gone too
        assert await ask() == (rest, in_5m, in_1h, 0)


@pytest.mark.asyncio
async def test_sdk_automatic_caching_follows_a_growing_conversation(clock: FakeClock) -> None:
    async with caching(clock) as (client, _):
        turn_1 = [{"role": "user", "content": SYSTEM_TEXT}]
        first = await client.messages.create(model=HAIKU, max_tokens=64, messages=turn_1,
                                             cache_control={"type": "ephemeral"})  # type: ignore[arg-type]
        _, written, _, _ = usage_split(first)
        assert written > 0 and first.usage.input_tokens == 0  # all of it before the breakpoint
        turn_2 = [*turn_1, {"role": "assistant", "content": "Noted."},
                  {"role": "user", "content": "And now?"}]
        second = await client.messages.create(model=HAIKU, max_tokens=64, messages=turn_2,
                                              cache_control={"type": "ephemeral"})  # type: ignore[arg-type]
        assert second.usage.cache_read_input_tokens == written


@pytest.mark.asyncio
async def test_sdk_gets_a_400_for_a_fifth_breakpoint(clock: FakeClock) -> None:
    marked = [{"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
              for i in range(5)]
    async with caching(clock) as (client, _):
        with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks"):
            await client.messages.create(model=HAIKU, max_tokens=64, system=marked,  # type: ignore[arg-type]
                                         messages=QUESTION)  # type: ignore[arg-type]
