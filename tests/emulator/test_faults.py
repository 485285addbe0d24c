"""Injected faults as the SDK meets them, and what each one bills (see emulator/faults.py)."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from pydantic import ValidationError

from emulator import Faults, Limits, ScriptedError, run_emulator
from emulator.faults import FaultInjector

HAIKU = "claude-haiku-5-5"
ASK = [{"role": "user", "content": "List three reasons to write tests before refactoring."}]


def _client(emu: Any, retries: int) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=retries,
                               _strict_response_validation=True)


@pytest.mark.parametrize("kind, error, status", [
    ("overloaded", anthropic.OverloadedError, "529"),
    ("server_error", anthropic.InternalServerError, "500"),
])
def test_529_and_500_are_retried_by_the_sdk_counted_and_not_billed(
        kind: str, error: type[Exception], status: str) -> None:
    with run_emulator(faults=Faults(**{kind: 1.0})) as emu, _client(emu, retries=1) as sdk:
        with pytest.raises(error):
            sdk.messages.create(model=HAIKU, max_tokens=50, messages=ASK)
        stats = emu.stats()
    assert stats["requests"] == 2  # the first attempt and the SDK's one retry
    assert stats["responses_by_status"] == {status: 2}
    assert stats["billed"] == {} and stats["total_cost_usd"] == "0"
    assert stats["overloaded" if kind == "overloaded" else "server_errors"] == 2


def test_a_529_gives_back_its_output_reservation() -> None:
    # Each attempt reserves 600 of 1,000 output tokens/min: without the refund the second
    # attempt would be a 429.
    with run_emulator(faults=Faults(overloaded=1.0), limits=Limits(otpm=1_000)) as emu, \
            _client(emu, retries=2) as sdk:
        with pytest.raises(anthropic.OverloadedError):
            sdk.messages.create(model=HAIKU, max_tokens=600, messages=ASK)
        assert emu.stats()["responses_by_status"] == {"529": 3}


def test_the_sdk_retries_a_scripted_529_until_it_succeeds() -> None:
    attempts: list[int] = []

    def flaky(body: dict[str, Any]) -> str:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise ScriptedError("overloaded_error")
        return "third time lucky"

    with run_emulator() as emu, _client(emu, retries=2) as sdk:
        emu.set_responder(flaky)
        reply = sdk.messages.create(model=HAIKU, max_tokens=50, messages=ASK)
        stats = emu.stats()
    assert reply.content[0].text == "third time lucky"  # type: ignore[union-attr]
    assert stats["responses_by_status"] == {"200": 1, "529": 2}
    assert stats["billed"][HAIKU]["requests"] == 1


def test_a_dropped_connection_is_a_connection_error_and_not_billed() -> None:
    with run_emulator(faults=Faults(disconnect=1.0)) as emu, _client(emu, retries=0) as sdk:
        with pytest.raises(anthropic.APIConnectionError):
            sdk.messages.create(model=HAIKU, max_tokens=50, messages=ASK)
        stats = emu.stats()
    assert (stats["requests"], stats["disconnects"], stats["in_flight"]) == (1, 1, 0)
    assert stats["responses_by_status"] == {} and stats["billed"] == {}


def test_a_lost_reply_is_a_connection_error_billed_in_full_and_spares_streams() -> None:
    with run_emulator(faults=Faults(lost_reply=1.0)) as emu, _client(emu, retries=0) as sdk:
        with pytest.raises(anthropic.APIConnectionError):
            sdk.messages.create(model=HAIKU, max_tokens=50, messages=ASK)
        lost = emu.stats()
        with sdk.messages.stream(model=HAIKU, max_tokens=50, messages=ASK) as stream:
            streamed = stream.get_final_message()
        stats = emu.stats()
    assert (lost["requests"], lost["lost_replies"], lost["disconnects"]) == (1, 1, 0)
    billed = lost["billed"][HAIKU]  # the model ran: the bill holds the reply no one read
    assert billed["requests"] == 1 and billed["input_tokens"] > 0 and billed["output_tokens"] > 0
    assert streamed.content and stats["lost_replies"] == 1  # the stream was answered


def test_a_stream_error_raises_mid_stream_and_bills_what_was_sent() -> None:
    received: list[str] = []
    with run_emulator(faults=Faults(stream_error=1.0)) as emu, _client(emu, retries=2) as sdk:
        with pytest.raises(anthropic.APIStatusError) as caught:
            with sdk.messages.stream(model=HAIKU, max_tokens=300, messages=ASK) as stream:
                for event in stream:
                    if event.type == "message_start":
                        input_tokens = event.message.usage.input_tokens
                    if event.type == "content_block_delta":
                        received.append(event.delta.text)  # type: ignore[union-attr]
        stats = emu.stats()
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert received, "the error came after some text"
    assert stats["requests"] == 1, "an error inside a 200 stream is not retried"
    assert stats["stream_errors"] == 1 and stats["responses_by_status"] == {"200": 1}
    billed = stats["billed"][HAIKU]
    assert (billed["input_tokens"], billed["output_tokens"]) == (input_tokens, len(received))


def test_a_stream_error_does_not_touch_whole_replies() -> None:
    with run_emulator(faults=Faults(stream_error=1.0)) as emu, _client(emu, retries=0) as sdk:
        reply = sdk.messages.create(model=HAIKU, max_tokens=300, messages=ASK)
    assert reply.stop_reason == "end_turn"


def test_fault_draws_repeat_with_the_seed_and_follow_the_rates() -> None:
    faults = Faults(overloaded=0.2, server_error=0.1, slow=0.5, slow_s=2.0)
    first = [FaultInjector(faults, seed=7).draw(stream=False) for _ in range(1)]
    injector_a, injector_b = FaultInjector(faults, seed=7), FaultInjector(faults, seed=7)
    a = [injector_a.draw(stream=True) for _ in range(2_000)]
    b = [injector_b.draw(stream=True) for _ in range(2_000)]
    assert a == b and a[0] == first[0]
    overloaded = sum(p.kind == "overloaded" for p in a) / len(a)
    slow = sum(p.extra_latency_s == 2.0 for p in a) / len(a)
    assert 0.15 < overloaded < 0.25 and 0.45 < slow < 0.55


def test_exclusive_fault_rates_cannot_exceed_one() -> None:
    with pytest.raises(ValidationError, match="at most one of them"):
        Faults(overloaded=0.6, disconnect=0.6)
