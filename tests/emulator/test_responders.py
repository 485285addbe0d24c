"""Scripted responders: what a user registers comes back through the SDK, limits applied."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from emulator import EmulatorHandle, ResponderReply, ScriptedError, run_emulator
from emulator.default_reply import default_content, fill_schema

HAIKU = "claude-haiku-5-5"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with run_emulator() as handle:
        yield handle


@pytest.fixture
def sdk(emu: EmulatorHandle) -> Iterator[anthropic.Anthropic]:
    emu.set_responder(None)
    with anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=0,
                             _strict_response_validation=True) as client:
        yield client
    emu.set_responder(None)


def test_a_string_responder_sees_the_body_and_answers(emu: EmulatorHandle,
                                                       sdk: anthropic.Anthropic) -> None:
    emu.set_responder(lambda body: body["messages"][-1]["content"].upper())
    reply = sdk.messages.create(model=HAIKU, max_tokens=50, messages=HELLO)
    assert reply.content[0].text == "HELLO"  # type: ignore[union-attr]
    assert reply.usage.output_tokens == 1


def test_an_async_responder_returning_blocks_can_call_a_tool(
        emu: EmulatorHandle, sdk: anthropic.Anthropic) -> None:
    async def planner(body: dict[str, Any]) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        return [{"type": "text", "text": "Looking it up."},
                {"type": "tool_use", "name": "search", "input": {"q": "ray actors"}}]

    emu.set_responder(planner)
    reply = sdk.messages.create(model=HAIKU, max_tokens=50, messages=HELLO, tools=[
        {"name": "search", "input_schema": {"type": "object"}}])
    assert reply.stop_reason == "tool_use"
    call = reply.content[1]
    assert call.type == "tool_use" and call.input == {"q": "ray actors"}
    assert call.id.startswith("toolu_")


def test_a_responder_reply_sets_the_stop_reason_but_max_tokens_still_cuts(
        emu: EmulatorHandle, sdk: anthropic.Anthropic) -> None:
    emu.set_responder(lambda body: ResponderReply(content="I cannot help with that.",
                                                  stop_reason="refusal"))
    assert sdk.messages.create(model=HAIKU, max_tokens=50, messages=HELLO).stop_reason == "refusal"
    cut = sdk.messages.create(model=HAIKU, max_tokens=2, messages=HELLO)
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 2)


@pytest.mark.parametrize("error_type, error, status", [
    ("rate_limit_error", anthropic.RateLimitError, 429),
    ("invalid_request_error", anthropic.BadRequestError, 400),
    ("overloaded_error", anthropic.OverloadedError, 529),
])
def test_a_scripted_error_is_the_apis_error_and_not_billed(
        emu: EmulatorHandle, sdk: anthropic.Anthropic, error_type: str,
        error: type[anthropic.APIStatusError], status: int) -> None:
    def fail(body: dict[str, Any]) -> str:
        raise ScriptedError(error_type, "scripted failure", headers={"x-should-retry": "false"})

    emu.set_responder(fail)
    before = emu.stats()["billed"].get(HAIKU, {}).get("requests", 0)
    with pytest.raises(error) as caught:
        sdk.messages.create(model=HAIKU, max_tokens=50, messages=HELLO)
    assert caught.value.status_code == status
    assert caught.value.body["error"]["message"] == "scripted failure"  # type: ignore[index]
    assert emu.stats()["billed"].get(HAIKU, {}).get("requests", 0) == before


@pytest.mark.parametrize("responder, says", [
    (lambda body: 42, "returned int"),
    (lambda body: [{"type": "image"}], "content[0]"),
    (lambda body: 1 / 0, "ZeroDivisionError"),
], ids=["wrong type", "bad block", "crash"])
def test_a_broken_responder_is_a_500_the_sdk_does_not_retry(
        emu: EmulatorHandle, responder: Any, says: str) -> None:
    emu.set_responder(responder)
    before = emu.stats()["requests"]
    with anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=2) as sdk:
        with pytest.raises(anthropic.InternalServerError) as caught:
            sdk.messages.create(model=HAIKU, max_tokens=50, messages=HELLO)
    assert says in caught.value.body["error"]["message"]  # type: ignore[index]
    assert emu.stats()["requests"] == before + 1
    emu.set_responder(None)


def test_set_responder_none_restores_the_default(emu: EmulatorHandle,
                                                 sdk: anthropic.Anthropic) -> None:
    emu.set_responder(lambda body: "scripted")
    emu.set_responder(None)
    reply = sdk.messages.create(model=HAIKU, max_tokens=200, messages=HELLO)
    assert reply.content[0].text != "scripted"  # type: ignore[union-attr]


def test_a_responder_must_be_callable(emu: EmulatorHandle) -> None:
    with pytest.raises(TypeError, match="callable"):
        emu.set_responder("not a function")  # type: ignore[arg-type]


def test_the_default_reply_is_a_function_of_the_request() -> None:
    body = {"messages": [{"role": "user", "content": "Give five bullet points on caching."}]}
    first, again = default_content(body), default_content(dict(body))
    assert first == again
    assert first[0]["text"].count("\n- ") == 5


@pytest.mark.parametrize("schema, expected", [
    ({"type": "integer", "minimum": 10}, 13),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 3}, [True, True, True]),
    ({"anyOf": [{"type": "null"}, {"type": "string"}]}, None),
    ({"type": ["null", "number"]}, 0.75),
    ({"const": "fixed"}, "fixed"),
])
def test_fill_schema_fits_common_schema_shapes(schema: dict[str, Any], expected: Any) -> None:
    assert fill_schema(schema, "about caching layers", "field") == expected
