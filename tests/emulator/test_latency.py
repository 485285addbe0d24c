"""Latency profiles: the model's plans (ranges and ordering), and ordering over real HTTP."""

from __future__ import annotations

import itertools
import time

import anthropic
import pytest

from emulator import run_emulator
from emulator.latency import LatencyModel

TYPICAL_REPLY = 150  # output tokens


@pytest.mark.parametrize("seed", range(20))
def test_realistic_typical_replies_fall_in_each_tiers_range(seed: int) -> None:
    model = LatencyModel(profile="realistic", latency_s=None, seed=seed)
    haiku, sonnet, opus = (model.plan(t, TYPICAL_REPLY).total for t in ("haiku", "sonnet", "opus"))
    assert 1 <= haiku <= 3 and 3 <= sonnet <= 8 and 8 <= opus <= 20
    assert haiku < sonnet < opus


def test_fast_keeps_the_order_in_milliseconds() -> None:
    model = LatencyModel(profile="fast", latency_s=None, seed=0)
    plans = [model.plan(t, TYPICAL_REPLY).total for t in ("haiku", "sonnet", "opus")]
    assert plans == sorted(plans) and plans[-1] < 0.05


def test_a_fixed_latency_overrides_the_profile_half_before_the_first_token() -> None:
    pace = LatencyModel(profile="realistic", latency_s=0.2, seed=0).plan("opus", 40)
    assert pace.total == pytest.approx(0.2) and pace.ttft_s == pytest.approx(0.1)
    instant = LatencyModel(profile="realistic", latency_s=0.0, seed=0).plan("opus", 40)
    assert instant.instant and instant.total == 0


def test_the_slow_fault_adds_before_the_first_token() -> None:
    model = LatencyModel(profile="fast", latency_s=0.0, seed=0)
    assert model.plan("haiku", 10, extra_s=2.5).ttft_s == 2.5


def test_jitter_repeats_with_the_seed() -> None:
    a = LatencyModel(profile="realistic", latency_s=None, seed=3)
    b = LatencyModel(profile="realistic", latency_s=None, seed=3)
    assert [a.plan("sonnet", n) for n in range(10)] == [b.plan("sonnet", n) for n in range(10)]


def _elapsed(profile: str) -> float:
    with run_emulator(profile=profile) as emu, anthropic.Anthropic(
            base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as sdk:
        start = time.perf_counter()
        sdk.messages.create(model="claude-haiku-5-5", max_tokens=2,
                            messages=[{"role": "user", "content": "hi"}])
        return time.perf_counter() - start


def test_a_realistic_reply_takes_longer_than_a_fast_one_over_http() -> None:
    assert _elapsed("fast") < _elapsed("realistic")


def test_a_stream_spreads_its_latency_first_token_late_then_steady() -> None:
    with run_emulator(latency_s=0.6) as emu, anthropic.Anthropic(
            base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as sdk:
        emu.set_responder(lambda body: "one two three four five six")
        arrivals: list[float] = []
        with sdk.messages.stream(model="claude-haiku-5-5", max_tokens=50,
                                 messages=[{"role": "user", "content": "count"}]) as stream:
            for event in stream:
                if event.type in ("message_start", "content_block_delta"):
                    arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(gaps) == 6  # message_start, then one delta per token
    assert gaps[0] > max(gaps[1:])  # half the latency before the first token, half spread
