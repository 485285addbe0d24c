"""Rate limits as the SDK meets them over HTTP: 429s, their headers, and the SDK's retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import pytest
from anthropic import AsyncAnthropic

from emulator import EmulatorConfig, Limits
from emulator.ratelimits import RateLimitBook
from emulator.state import EmulatorState
from tests.emulator.loopback_app import served
from tests.fake_clock import FakeClock

HAIKU = "claude-haiku-5-5"
ASK = [{"role": "user", "content": "Say hello to the rate limiter."}]



@asynccontextmanager
async def limited(limits: Limits, clock: FakeClock | None = None, *, max_retries: int = 0,
                  ) -> AsyncIterator[tuple[AsyncAnthropic, EmulatorState]]:
    """An emulator with ``limits`` (on ``clock`` if given) and an SDK client of it."""
    async with served(EmulatorConfig(latency_s=0.0, limits=limits)) as (url, state):
        if clock is not None:
            state.limits = RateLimitBook(state.config.limits_for, clock=clock,
                                         wall_clock=clock.wall)
        async with AsyncAnthropic(base_url=url, api_key="sk-test", max_retries=max_retries,
                                  _strict_response_validation=True) as client:
            yield client, state


def thousands(n: int) -> str:
    return str((n + 500) // 1000 * 1000)


@pytest.mark.asyncio
async def test_a_429_names_the_limit_and_says_when_to_retry() -> None:
    clock = FakeClock()
    async with limited(Limits(rpm=2, itpm=50_000), clock) as (client, state):
        for _ in range(2):
            await client.messages.create(model=HAIKU, max_tokens=64, messages=ASK)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=HAIKU, max_tokens=64, messages=ASK)
        error = caught.value
        headers = error.response.headers
        assert error.status_code == 429
        assert error.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert error.body["error"]["message"].startswith(  # type: ignore[index]
            "This request would exceed the rate limit for your organization of 2 requests "
            "per minute.")
        assert headers["request-id"] == error.request_id
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("30", "30000")
        assert headers["anthropic-ratelimit-requests-limit"] == "2"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert headers["anthropic-ratelimit-requests-reset"] == "2026-11-27T12:01:00Z"
        assert headers["anthropic-ratelimit-input-tokens-limit"] == "50000"
        assert "anthropic-ratelimit-output-tokens-limit" not in headers  # OTPM is unlimited
        assert state.stats.rate_limited["requests"] == 1

        clock.t += 30.0  # one request's worth refilled
        await client.messages.create(model=HAIKU, max_tokens=64, messages=ASK)


@pytest.mark.asyncio
async def test_every_reply_whole_or_streamed_carries_the_levels() -> None:
    async with limited(Limits(rpm=1000, itpm=80_000, otpm=16_000), FakeClock()) as (client, _):
        raw = await client.messages.with_raw_response.create(model=HAIKU, max_tokens=4000,
                                                             messages=ASK)
        message = await raw.parse()
        used_in, used_out = message.usage.input_tokens, message.usage.output_tokens
        assert raw.headers["anthropic-ratelimit-requests-remaining"] == "999"
        assert raw.headers["anthropic-ratelimit-input-tokens-remaining"] == thousands(
            80_000 - used_in)
        # The headers are taken before the reply is settled: all of max_tokens is reserved.
        assert raw.headers["anthropic-ratelimit-output-tokens-remaining"] == thousands(
            16_000 - 4000)
        assert raw.headers["anthropic-ratelimit-tokens-limit"] == "96000"
        assert raw.headers["anthropic-ratelimit-input-tokens-reset"].endswith("Z")

        async with client.messages.stream(model=HAIKU, max_tokens=4000, messages=ASK) as stream:
            headers = stream.response.headers
            await stream.get_final_message()
        assert headers["anthropic-ratelimit-requests-remaining"] == "998"
        # The first reply was settled since (its unused reservation refunded); the stream's
        # headers leave at its start, with its own max_tokens reserved.
        assert headers["anthropic-ratelimit-output-tokens-remaining"] == thousands(
            16_000 - used_out - 4000)


@pytest.mark.asyncio
async def test_a_request_larger_than_a_minute_of_limit_is_refused_without_retry_after() -> None:
    async with limited(Limits(otpm=8000), FakeClock(), max_retries=0) as (client, state):
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=HAIKU, max_tokens=8001, messages=ASK)
        assert "8,000 output tokens per minute" in str(caught.value.body)
        assert "retry-after" not in caught.value.response.headers
        assert state.stats.rate_limited["output_tokens"] == 1


@pytest.mark.asyncio
async def test_the_concurrency_cap_refuses_until_the_first_request_ends() -> None:
    gate = asyncio.Event()

    async def held(body: dict[str, Any]) -> str:
        await gate.wait()  # admitted, holding its slot, until the test lets go
        return "done"

    async with limited(Limits(max_concurrency=1)) as (client, state):
        state.responders.set(held)
        first = asyncio.create_task(
            client.messages.create(model=HAIKU, max_tokens=64, messages=ASK))
        deadline = time.monotonic() + 5
        while not any(lane["in_flight"] for lane in state.limits.snapshot().values()):
            assert time.monotonic() < deadline, "the first request was never admitted"
            await asyncio.sleep(0.01)
        with pytest.raises(anthropic.RateLimitError) as caught:
            await client.messages.create(model=HAIKU, max_tokens=64, messages=ASK)
        assert "concurrent" in str(caught.value.body)
        assert "retry-after" not in caught.value.response.headers
        gate.set()
        assert (await first).content[0].text == "done"  # type: ignore[union-attr]
        await client.messages.create(model=HAIKU, max_tokens=64, messages=ASK)
        assert state.stats.rate_limited["concurrency"] == 1


@pytest.mark.asyncio
async def test_the_sdk_retries_after_retry_after_ms_and_then_succeeds() -> None:
    big = [{"role": "user", "content": "tokens " * 3000}]
    async with limited(Limits(), max_retries=1) as (client, state):
        need = (await client.messages.count_tokens(model=HAIKU, messages=big)).input_tokens
        # Two requests overdraw the bucket by 1/40 of a minute: the second waits about 1.5 s,
        # longer than the SDK's own first backoff (at most 0.5 s), so only a retry that
        # honours retry-after-ms (or retry-after) can succeed with one retry.
        state.limits = RateLimitBook(lambda tier: Limits(itpm=2 * need * 40 // 41))
        await client.messages.create(model=HAIKU, max_tokens=16, messages=big)
        second = await client.messages.create(model=HAIKU, max_tokens=16, messages=big)
        assert second.usage.input_tokens == need
        assert state.stats.rate_limited["input_tokens"] == 1
        assert state.stats.by_status == {200: 2, 429: 1}
