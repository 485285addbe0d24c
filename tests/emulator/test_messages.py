"""POST /v1/messages through the real SDK: whole and streamed replies, tools, stops, counting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from anthropic import Anthropic, AsyncAnthropic

from emulator import EmulatorHandle, run_emulator

HAIKU = "claude-haiku-5-5"
WEATHER = {"name": "get_weather", "description": "Current weather for a place.",
           "input_schema": {"type": "object", "required": ["location", "unit"],
                            "properties": {"location": {"type": "string"},
                                           "unit": {"enum": ["celsius", "fahrenheit"]}}}}
ASK = [{"role": "user", "content": "Summarise why an actor model suits a fleet of LLM agents."}]


@pytest.fixture
def client(emulator: EmulatorHandle) -> Iterator[Anthropic]:
    with Anthropic(base_url=emulator.base_url, api_key=emulator.api_key, max_retries=0,
                   _strict_response_validation=True) as sdk:
        yield sdk


def _blocks(content: list[Any]) -> list[dict[str, Any]]:
    """Content blocks as plain data (the stream helper's block classes differ from create's)."""
    return [{k: v for k, v in block.model_dump().items() if k in ("type", "text", "name", "input")}
            for block in content]


def _billed(emu: EmulatorHandle, model: str = HAIKU) -> dict[str, Any]:
    return emu.stats()["billed"][model]


def test_a_plain_call_returns_a_message_billed_as_its_usage(
        client: Anthropic, emulator: EmulatorHandle) -> None:
    message = client.messages.create(model=HAIKU, max_tokens=300, messages=ASK)
    assert message.role == "assistant" and message.model == HAIKU
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.id.startswith("msg_") and message._request_id.startswith("req_")
    assert message.usage.service_tier == "standard"
    billed = _billed(emulator)
    assert (billed["requests"], billed["input_tokens"], billed["output_tokens"]) == (
        1, message.usage.input_tokens, message.usage.output_tokens)


@pytest.mark.asyncio
async def test_the_async_client_gets_the_same_deterministic_reply(
        client: Anthropic, emulator: EmulatorHandle) -> None:
    whole = client.messages.create(model=HAIKU, max_tokens=300, messages=ASK)
    async with AsyncAnthropic(base_url=emulator.base_url, api_key=emulator.api_key,
                              max_retries=0, _strict_response_validation=True) as sdk:
        again = await sdk.messages.create(model=HAIKU, max_tokens=300, messages=ASK)
    assert again.content == whole.content and again.usage == whole.usage


def test_the_raw_stream_is_the_apis_event_sequence(client: Anthropic) -> None:
    with client.messages.with_streaming_response.create(
            model=HAIKU, max_tokens=300, messages=ASK, stream=True) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"].startswith("req_")
        lines = list(response.iter_lines())
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    datas = [json.loads(line.removeprefix("data: ")) for line in lines
             if line.startswith("data: ")]
    assert len(names) == len(datas) and [d["type"] for d in datas] == names
    deltas = names.count("content_block_delta")
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[3:3 + deltas] == ["content_block_delta"] * deltas
    assert names[3 + deltas:] == ["content_block_stop", "message_delta", "message_stop"]
    assert datas[0]["message"]["stop_reason"] is None
    assert datas[-2]["usage"]["output_tokens"] == deltas  # one token per delta


def test_stream_and_whole_reply_agree(client: Anthropic) -> None:
    whole = client.messages.create(model=HAIKU, max_tokens=300, messages=ASK)
    with client.messages.stream(model=HAIKU, max_tokens=300, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert _blocks(final.content) == _blocks(whole.content)
    assert text == whole.content[0].text
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.stop_reason == "end_turn"


def test_a_streamed_tool_call_fits_the_schema(client: Anthropic) -> None:
    with client.messages.stream(
            model="claude-sonnet-5-5", max_tokens=200, tools=[WEATHER],
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "Is it raining in Lisbon?"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (call,) = [b for b in final.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert call.input == {"location": "Lisbon", "unit": "celsius"}
    assert "input_json" in kinds
    assert final.usage.output_tokens == kinds.count("content_block_delta")


def test_an_auto_tool_is_called_when_named_then_answered_in_text(client: Anthropic) -> None:
    question = {"role": "user", "content": "Use get_weather for Paris, please."}
    first = client.messages.create(model=HAIKU, max_tokens=200, tools=[WEATHER],
                                   messages=[question])
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    follow_up = [question, {"role": "assistant", "content": first.content},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "18 C and sunny"}]}]
    second = client.messages.create(model=HAIKU, max_tokens=200, tools=[WEATHER],
                                    messages=follow_up)
    assert second.stop_reason == "end_turn"
    assert "18 C and sunny" in second.content[0].text


def test_no_tool_is_called_unless_asked(client: Anthropic) -> None:
    reply = client.messages.create(model=HAIKU, max_tokens=200, tools=[WEATHER], messages=ASK)
    assert [b.type for b in reply.content] == ["text"]
    none = client.messages.create(model=HAIKU, max_tokens=200, tools=[WEATHER],
                                  tool_choice={"type": "none"},
                                  messages=[{"role": "user", "content": "Use get_weather."}])
    assert none.stop_reason == "end_turn"


def test_json_is_returned_when_asked_and_fits_the_example(client: Anthropic) -> None:
    reply = client.messages.create(model=HAIKU, max_tokens=300, messages=[{
        "role": "user",
        "content": 'Rate this essay. Answer in JSON like {"title": "t", "score": 1, '
                   '"tags": ["a"]}'}])
    data = json.loads(reply.content[0].text)
    assert set(data) == {"title", "score", "tags"}
    assert isinstance(data["score"], int) and isinstance(data["tags"], list)


def test_output_config_schema_is_honoured(client: Anthropic) -> None:
    schema = {"type": "object", "required": ["verdict"], "additionalProperties": False,
              "properties": {"verdict": {"type": "string", "enum": ["pass", "fail"]},
                             "confidence": {"type": "number", "minimum": 0}}}
    reply = client.messages.create(
        model=HAIKU, max_tokens=100, messages=[{"role": "user", "content": "Judge it."}],
        output_config={"format": {"type": "json_schema", "schema": schema}})
    assert json.loads(reply.content[0].text) == {"verdict": "pass", "confidence": 0.75}


def test_stop_sequences_cut_the_reply_and_are_reported(client: Anthropic) -> None:
    whole = client.messages.create(model=HAIKU, max_tokens=300, messages=ASK)
    stop = whole.content[0].text.split()[3]
    cut = client.messages.create(model=HAIKU, max_tokens=300, messages=ASK,
                                 stop_sequences=["NEVER-THERE", stop])
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)
    assert stop not in cut.content[0].text
    assert whole.content[0].text.startswith(cut.content[0].text)


def test_max_tokens_truncates_whole_and_streamed_replies_alike(client: Anthropic) -> None:
    whole = client.messages.create(model=HAIKU, max_tokens=5, messages=ASK)
    with client.messages.stream(model=HAIKU, max_tokens=5, messages=ASK) as stream:
        deltas = sum(1 for e in stream if e.type == "content_block_delta")
        final = stream.get_final_message()
    assert whole.stop_reason == final.stop_reason == "max_tokens"
    assert whole.usage.output_tokens == final.usage.output_tokens == deltas == 5
    assert _blocks(final.content) == _blocks(whole.content)


def test_count_tokens_equals_the_input_a_create_bills() -> None:
    system = [{"type": "text", "text": "Background. " * 200,
               "cache_control": {"type": "ephemeral"}}]
    with run_emulator(min_cacheable_tokens=100) as emu, Anthropic(
            base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as sdk:
        counted = sdk.messages.count_tokens(model=HAIKU, system=system, messages=ASK)
        for _ in range(2):  # a cache write, then a cache read: the total never changes
            usage = sdk.messages.create(model=HAIKU, max_tokens=50, system=system,
                                        messages=ASK).usage
            total = (usage.input_tokens + (usage.cache_creation_input_tokens or 0)
                     + (usage.cache_read_input_tokens or 0))
            assert total == counted.input_tokens
        assert usage.cache_read_input_tokens and usage.cache_read_input_tokens > 0
        assert emu.stats()["count_tokens_requests"] == 1


def test_prefill_and_multi_turn_conversations_are_accepted(client: Anthropic) -> None:
    reply = client.messages.create(model=HAIKU, max_tokens=50, messages=[
        *ASK, {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Shorter, please."},
        {"role": "assistant", "content": "In short:"}])
    assert reply.content[0].text


def test_the_emulator_records_what_was_sent(client: Anthropic, emulator: EmulatorHandle) -> None:
    client.messages.create(model=HAIKU, max_tokens=7, messages=ASK, metadata={"user_id": "u1"})
    (body,) = emulator.received
    assert body["max_tokens"] == 7 and body["metadata"] == {"user_id": "u1"}
