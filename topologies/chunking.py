"""Cutting documents into token-sized chunks that overlap, at natural breaks where possible.

Why our own estimate and not Claude's tokenizer: there is none offline, and a chunk only has
to stay under a budget. The measure is the runtime's own upper bound
(:func:`actors.token_estimate.text_tokens`, one token per 3 UTF-8 bytes, about a third over
Claude's average), so a chunk of ``chunk_tokens`` never costs more than that.

Chunks are cut between words. In the last quarter of a window the cut prefers a paragraph
break, then a sentence end, so a mapper rarely sees half a sentence; the next chunk starts
``overlap_tokens`` before the cut, so a fact that straddles the cut is seen whole at least once.
A "word" longer than a whole chunk (a base64 blob, a minified line) is split hard.

Only spans (character offsets) are kept per document: 20,000 chunks cost a few hundred KB until
their text is sliced out, one at a time, when a mapper needs it.

Example:
    >>> text = "One two three. Four five six.\\n\\nSeven eight nine ten."
    >>> [text[a:b] for a, b in chunk_spans(text, chunk_tokens=12, overlap_tokens=2)]
    ['One two three. Four five six.', 'six.\\n\\nSeven eight nine ten.']
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from actors.token_estimate import text_tokens

__all__ = ["BYTES_PER_TOKEN", "chunk_spans", "text_tokens"]

BYTES_PER_TOKEN = 3
"""The estimate's bytes per token (``actors.token_estimate``): a chunk of N tokens holds at
most 3N UTF-8 bytes."""

_WORD = re.compile(r"\S+")
_SENTENCE_END = (".", "!", "?", ".\"", ".)", "!\"", "?\"")
_PREFER_TAIL = 0.25
"""Look for a paragraph or sentence break in the last quarter of a window."""


def chunk_spans(text: str, chunk_tokens: int,
                overlap_tokens: int = 0) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` covering ``text``, each at most ``chunk_tokens``.

    Args:
        text: The document.
        chunk_tokens: Largest chunk, in estimated tokens (> 0).
        overlap_tokens: How much of the end of one chunk the next repeats (at most half a
            chunk, so every step moves forward).

    Returns:
        Spans in order; empty for a text with no words.
    """
    if chunk_tokens <= 0 or not 0 <= overlap_tokens * 2 <= chunk_tokens:
        raise ValueError(f"need chunk_tokens > 0 and 0 <= overlap_tokens <= chunk_tokens / 2, "
                         f"got {chunk_tokens} and {overlap_tokens}")
    budget, overlap = chunk_tokens * BYTES_PER_TOKEN, overlap_tokens * BYTES_PER_TOKEN
    words = _Words(text, budget)
    spans: list[tuple[int, int]] = []
    first, count = 0, len(words)
    while first < count:
        last = words.last_fitting(first, budget)
        last = words.nicer_cut(first, last) if last < count - 1 else last
        spans.append((words.char_start[first], words.char_end[last]))
        if last == count - 1:
            break
        first = max(first + 1, words.first_within(last, overlap))
    return spans


class _Words:
    """Word boundaries of one text, in characters and in UTF-8 bytes (compact arrays)."""

    def __init__(self, text: str, max_word_bytes: int) -> None:
        self.text = text
        self.char_start, self.char_end = array("q"), array("q")
        self.byte_start, self.byte_end = array("q"), array("q")
        ascii_only = text.isascii()
        offset, last_char = 0, 0
        for start, end in _word_spans(text, max_word_bytes, ascii_only):
            offset += _bytes(text, last_char, start, ascii_only)
            self.char_start.append(start)
            self.byte_start.append(offset)
            offset += _bytes(text, start, end, ascii_only)
            self.char_end.append(end)
            self.byte_end.append(offset)
            last_char = end

    def __len__(self) -> int:
        return len(self.char_start)

    def last_fitting(self, first: int, budget: int) -> int:
        """The last word ``w`` such that words ``first..w`` fit in ``budget`` bytes."""
        return max(first, bisect_right(self.byte_end, self.byte_start[first] + budget) - 1)

    def first_within(self, last: int, overlap: int) -> int:
        """The first word that starts within ``overlap`` bytes of the end of word ``last``."""
        return bisect_left(self.byte_start, self.byte_end[last] - overlap)

    def nicer_cut(self, first: int, last: int) -> int:
        """A paragraph break, else a sentence end, in the window's tail; else ``last``."""
        floor = last - int((last - first) * _PREFER_TAIL)
        sentence = None
        for w in range(last, max(floor, first + 1) - 1, -1):
            gap = self.text[self.char_end[w]:self.char_start[w + 1]]
            if "\n\n" in gap:
                return w
            if sentence is None and self.text[self.char_start[w]:self.char_end[w]].endswith(
                    _SENTENCE_END):
                sentence = w
        return last if sentence is None else sentence


def _word_spans(text: str, max_word_bytes: int, ascii_only: bool) -> Iterator[tuple[int, int]]:
    """Words as character spans; a word over ``max_word_bytes`` is split hard."""
    # 4 bytes is the most one character takes in UTF-8, so this many characters always fit.
    piece = max(1, max_word_bytes // (1 if ascii_only else 4))
    for match in _WORD.finditer(text):
        start, end = match.span()
        if end - start <= piece or _bytes(text, start, end, ascii_only) <= max_word_bytes:
            yield start, end
            continue
        for cut in range(start, end, piece):
            yield cut, min(cut + piece, end)


def _bytes(text: str, start: int, end: int, ascii_only: bool) -> int:
    return end - start if ascii_only else len(text[start:end].encode())
