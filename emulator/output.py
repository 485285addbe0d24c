"""A reply cut into output tokens: stop sequences, ``max_tokens`` and the stop reason.

The streamed and the whole (JSON) reply are built from the same :class:`Output`, so they carry
the same text, the same stop reason and the same ``output_tokens``: one token per text piece
or tool-input JSON fragment (see :mod:`emulator.tokens`).

Rules, in the order a real model meets them while generating:

* ``stop_sequences``: the text is cut before the earliest match; later blocks are dropped and
  ``stop_reason`` is ``stop_sequence`` with ``stop_sequence`` set to the matched string.
* ``max_tokens``: generation stops after that many tokens, mid-block if need be, and
  ``stop_reason`` is ``max_tokens`` (it wins over a stop sequence found later in the text).
  A tool call cut short keeps the input parsed so far (``{}`` in the JSON reply when its
  fragment is not valid JSON yet).
* otherwise ``tool_use`` if a tool is called, else ``end_turn`` (or the responder's own).

``output_tokens`` of a reply that produced nothing is 1, as the API never bills 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from emulator.tokens import split_text

__all__ = ["OutBlock", "Output", "shape"]


@dataclass(slots=True)
class OutBlock:
    """One content block of the reply, as the token pieces that make it up."""

    kind: str
    """``text`` or ``tool_use``."""
    pieces: list[str]
    """Text pieces, or the fragments of the tool input's JSON; one output token each."""
    tool_id: str = ""
    """The ``toolu_`` id of a tool call."""
    name: str = ""
    """The tool's name."""

    def whole(self) -> dict[str, Any]:
        """The block as the non-streaming reply shows it."""
        joined = "".join(self.pieces)
        if self.kind == "text":
            return {"type": "text", "text": joined}
        try:
            value = json.loads(joined) if joined else {}
        except ValueError:
            value = {}
        return {"type": "tool_use", "id": self.tool_id, "name": self.name,
                "input": value if isinstance(value, dict) else {}}

    def start(self) -> dict[str, Any]:
        """The block as ``content_block_start`` announces it (empty, to be filled by deltas)."""
        if self.kind == "text":
            return {"type": "text", "text": ""}
        return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": {}}


@dataclass(slots=True)
class Output:
    """The whole reply: blocks, stop reason and the output tokens it bills."""

    blocks: list[OutBlock] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None

    @property
    def tokens(self) -> int:
        """Pieces produced: the number of deltas a stream carries."""
        return sum(len(b.pieces) for b in self.blocks)

    @property
    def output_tokens(self) -> int:
        """What a completed reply bills: its pieces, and never 0."""
        return max(1, self.tokens)


def shape(content: list[dict[str, Any]], *, max_tokens: int, stop_sequences: list[str] | None,
          stop_reason: str | None = None) -> Output:
    """Cut a responder's content into an :class:`Output` under the request's limits.

    Example:
        >>> out = shape([{"type": "text", "text": "one two three four"}], max_tokens=2,
        ...             stop_sequences=None)
        >>> out.stop_reason, out.output_tokens, "".join(out.blocks[0].pieces)
        ('max_tokens', 2, 'one two')
    """
    out = Output()
    budget = max_tokens
    for block in content:
        piece, matched = _pieces(block, stop_sequences)
        if len(piece.pieces) > budget:
            piece.pieces = piece.pieces[:budget]
            out.blocks.append(piece)
            out.stop_reason = "max_tokens"
            return out
        budget -= len(piece.pieces)
        out.blocks.append(piece)
        if matched is not None:
            out.stop_reason, out.stop_sequence = "stop_sequence", matched
            return out
        if budget == 0 and block is not content[-1]:
            out.stop_reason = "max_tokens"
            return out
    has_tool = any(b.kind == "tool_use" for b in out.blocks)
    out.stop_reason = stop_reason or ("tool_use" if has_tool else "end_turn")
    return out


def _pieces(block: dict[str, Any], stops: list[str] | None) -> tuple[OutBlock, str | None]:
    """Cut one block into pieces, stopping at the earliest stop sequence in its text."""
    if block["type"] == "tool_use":
        text = json.dumps(block.get("input", {}), ensure_ascii=False)
        return OutBlock("tool_use", split_text(text), block["id"], block["name"]), None
    text = block["text"]
    matched = None
    if stops:
        best = len(text) + 1
        for stop in stops:
            at = text.find(stop)
            if 0 <= at < best:
                best, matched = at, stop
        if matched is not None:
            text = text[:best]
    return OutBlock("text", split_text(text)), matched
