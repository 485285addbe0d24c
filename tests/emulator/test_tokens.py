"""The token estimator and the output cutter: exact, deterministic, splittable at breakpoints."""

from __future__ import annotations

from typing import Any

import pytest

from emulator.output import shape
from emulator.tokens import (
    MESSAGE_OVERHEAD,
    count_input,
    has_cache_control,
    segments,
    split_text,
    text_tokens,
)

_TOOL = {"name": "lookup", "description": "Find a fact.",
         "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-haiku-5-5", "max_tokens": 10,
            "messages": [{"role": "user", "content": "Hello there"}], **extra}


@pytest.mark.parametrize("text, tokens", [("", 0), ("abcd", 1), ("abcde", 2), ("é", 1),
                                          ("ééé", 2), ("x" * 4000, 1000)])
def test_text_is_a_quarter_of_its_utf8_bytes_rounded_up(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


@pytest.mark.parametrize("body", [
    _body(),
    _body(system="You are terse."),
    _body(system=[{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
          tools=[_TOOL]),
    _body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"},
                                                 {"type": "image", "source": {}}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t",
                                                       "name": "lookup", "input": {"q": "x"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                                  "content": "forty-two"}]}]),
])
def test_count_is_the_sum_of_the_segments(body: dict[str, Any]) -> None:
    assert count_input(body) == sum(s.tokens for s in segments(body)) > 0


def test_segments_follow_prefix_order_tools_system_messages() -> None:
    body = _body(system="sys", tools=[_TOOL])
    first = segments(body)
    assert len(first) == 3
    # The tool comes first: changing it changes the first digest only.
    other = segments({**body, "tools": [{**_TOOL, "description": "Other."}]})
    assert first[0].digest != other[0].digest
    assert first[1:] == other[1:]


def test_a_string_and_its_one_block_list_are_the_same_prefix() -> None:
    as_string = segments(_body())
    as_blocks = segments(_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Hello there"}]}]))
    assert as_string == as_blocks


def test_moving_a_breakpoint_keeps_the_digest_and_sets_the_ttl() -> None:
    plain = segments(_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "doc"}]}]))
    marked = segments(_body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]))
    assert plain[0].digest == marked[0].digest
    assert (plain[0].cache_ttl, marked[0].cache_ttl) == (None, "1h")


def test_message_overhead_is_folded_into_the_first_block() -> None:
    body = _body(messages=[{"role": "user", "content": [{"type": "text", "text": "abcd"},
                                                        {"type": "text", "text": "abcd"}]}])
    first, second = segments(body)
    assert first.tokens - second.tokens == MESSAGE_OVERHEAD


def test_cache_control_anywhere_is_detected() -> None:
    assert not has_cache_control(_body())
    assert has_cache_control(_body(cache_control={"type": "ephemeral"}))
    assert has_cache_control(_body(tools=[{**_TOOL, "cache_control": {"type": "ephemeral"}}]))


@pytest.mark.parametrize("text", ["", "word", "  leading and trailing  ", "a\n\nb\tc",
                                  "supercalifragilistic", "é 𝄞 ünïcödé"])
def test_output_pieces_rebuild_the_text(text: str) -> None:
    assert "".join(split_text(text)) == text


def test_output_stops_at_the_earliest_stop_sequence() -> None:
    out = shape([{"type": "text", "text": "alpha beta END gamma STOP"}], max_tokens=100,
                stop_sequences=["STOP", "END"])
    assert (out.stop_reason, out.stop_sequence) == ("stop_sequence", "END")
    assert "".join(out.blocks[0].pieces) == "alpha beta "


def test_max_tokens_wins_over_a_later_stop_sequence() -> None:
    out = shape([{"type": "text", "text": "one two three END"}], max_tokens=2,
                stop_sequences=["END"])
    assert (out.stop_reason, out.output_tokens) == ("max_tokens", 2)


def test_a_tool_call_cut_by_max_tokens_keeps_no_invalid_input() -> None:
    blocks = [{"type": "text", "text": "Calling."},
              {"type": "tool_use", "id": "toolu_1", "name": "lookup",
               "input": {"q": "a long query string here"}}]
    out = shape(blocks, max_tokens=3, stop_sequences=None)
    assert out.stop_reason == "max_tokens"
    assert out.blocks[1].whole() == {"type": "tool_use", "id": "toolu_1", "name": "lookup",
                                     "input": {}}
    assert shape(blocks, max_tokens=100, stop_sequences=None).stop_reason == "tool_use"


def test_an_empty_reply_still_bills_one_output_token() -> None:
    out = shape([{"type": "text", "text": "STOP now"}], max_tokens=5, stop_sequences=["STOP"])
    assert (out.tokens, out.output_tokens) == (0, 1)
