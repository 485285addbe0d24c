"""Prompt-cache accounting: which input tokens a request reads, writes, or pays in full.

The API caches the exact prefix of a request (tools -> system -> messages) up to each
``cache_control`` breakpoint (``docs/messages-api.md`` §5). This module keeps those prefixes as
running hashes of the request's :class:`~emulator.tokens.Segment` digests, per key and model,
with 5-minute or 1-hour lifetimes on an injectable clock. For each request it answers with a
:class:`CachePlan` splitting the input count four ways; the core commits the plan when the
response begins, because an entry is visible only after the first response has started.

Example:
    >>> cache = PromptCache(clock=lambda: 0.0)
    >>> doc = [Segment(3000, b"doc", "5m"), Segment(20, b"question", None)]
    >>> first = cache.plan(key="k", model="m", segments=doc, auto=None, min_cacheable=1024)
    >>> (first.cache_write_5m, first.input_tokens)
    (3000, 20)
    >>> first.commit()
    >>> cache.plan(key="k", model="m", segments=doc, auto=None, min_cacheable=1024).cache_read
    3000
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from emulator.tokens import Segment

Ttl = Literal["5m", "1h"]

MAX_BREAKPOINTS = 4
"""The API's limit of ``cache_control`` markers per request (the automatic one included)."""
LOOKBACK_BLOCKS = 20
"""Block boundaries checked for an existing entry, counting back from each breakpoint."""
TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
_SWEEP_EVERY = 512
"""Commits between sweeps of expired entries, so a long run does not grow without bound."""

_CacheKey = tuple[str, str, bytes]


@dataclass(slots=True)
class _Entry:
    expires_at: float
    ttl: Ttl


def breakpoints(segments: list[Segment], auto: dict[str, object] | None) -> dict[int, Ttl]:
    """Map each breakpoint's segment index to its TTL, the automatic one included.

    The automatic breakpoint sits on the last segment; a block there with its own
    ``cache_control`` keeps its TTL and uses no extra slot.
    """
    marks: dict[int, Ttl] = {i: s.cache_ttl for i, s in enumerate(segments) if s.cache_ttl}
    if auto is not None and segments:
        marks.setdefault(len(segments) - 1, _auto_ttl(auto))
    return marks


def validate_breakpoints(segments: list[Segment], auto: dict[str, object] | None) -> None:
    """Check the request's cache markers as the API does before running it.

    Raises:
        ValueError: more than four breakpoints, or an automatic ``cache_control`` that is not
            ``{"type": "ephemeral", "ttl": "5m" | "1h"}``; the message is the 400's.
    """
    if auto is not None:
        if auto.get("type") != "ephemeral":
            raise ValueError(f"cache_control.type: Input should be 'ephemeral', "
                             f"got {auto.get('type')!r}")
        _auto_ttl(auto)
    found = sum(1 for s in segments if s.cache_ttl) + (1 if auto is not None else 0)
    if segments and auto is not None and segments[-1].cache_ttl:
        found -= 1  # the automatic breakpoint lands on a block already marked
    if found > MAX_BREAKPOINTS:
        raise ValueError(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be "
                         f"provided. Found {found}.")


def _auto_ttl(auto: dict[str, object]) -> Ttl:
    ttl = auto.get("ttl", "5m")
    if ttl not in TTL_SECONDS:
        raise ValueError(f"cache_control.ttl: Input should be '5m' or '1h', got {ttl!r}")
    return ttl  # type: ignore[return-value]


@dataclass
class CachePlan:
    """How one request's input splits; the four counts always sum to its input tokens."""

    input_tokens: int
    """Uncached input: after the last breakpoint, plus runs too short to cache."""
    cache_write_5m: int
    """Tokens written with a 5-minute lifetime."""
    cache_write_1h: int
    """Tokens written with a 1-hour lifetime."""
    cache_read: int
    """Tokens read from an existing entry."""
    _cache: PromptCache | None = field(default=None, repr=False)
    _writes: list[tuple[_CacheKey, Ttl]] = field(default_factory=list, repr=False)
    _reads: list[tuple[_CacheKey, Ttl]] = field(default_factory=list, repr=False)
    _committed: bool = field(default=False, repr=False)

    @property
    def cache_creation(self) -> int:
        """All tokens written (the API's ``cache_creation_input_tokens``)."""
        return self.cache_write_5m + self.cache_write_1h

    def commit(self) -> None:
        """Store the written prefixes and refresh the read ones; idempotent.

        Call it when the response begins: until then parallel requests all miss, as in the API.
        """
        if self._committed or self._cache is None:
            return
        self._committed = True
        self._cache.store(self._reads + self._writes)


class PromptCache:
    """Cached prefixes per (key, model), with lifetimes on ``clock`` (seconds).

    Args:
        clock: Monotonic seconds; tests pass a fake one to expire entries.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[_CacheKey, _Entry] = {}
        self._commits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def plan(self, *, key: str, model: str, segments: list[Segment],
             auto: dict[str, object] | None, min_cacheable: int) -> CachePlan:
        """Split a request's input into uncached, written and read tokens.

        Args:
            key: Whose cache (caches are isolated per workspace; the key stands for it).
            model: The model id (each model has its own cache).
            segments: The input in prefix order; their tokens sum to the input count.
            auto: The request's top-level ``cache_control``, or None.
            min_cacheable: The model's shortest cacheable prefix; shorter ones are not
                written, without error.

        Returns:
            The split, with what :meth:`CachePlan.commit` will store.
        """
        marks = breakpoints(segments, auto)
        ends = _prefix_ends(segments)
        hashes = _prefix_hashes(segments)
        now = self._clock()
        hit = self._longest_hit(key, model, hashes, marks, now)
        read_end = ends[hit] if hit is not None else 0
        plan = CachePlan(input_tokens=0, cache_write_5m=0, cache_write_1h=0,
                         cache_read=read_end, _cache=self)
        if hit is not None:  # refresh the entry read, and this request's marks inside it
            read_at = sorted({hit, *(i for i in marks if i < hit)})
            plan._reads = [(ck, self._entries[ck].ttl) for i in read_at
                           if self._live(ck := (key, model, hashes[i]), now)]
        start = read_end
        for i in sorted(marks):
            if (hit is not None and i <= hit) or ends[i] < min_cacheable:
                continue  # already read, or too short: its run joins the next breakpoint's
            written = ends[i] - start
            if marks[i] == "1h":
                plan.cache_write_1h += written
            else:
                plan.cache_write_5m += written
            plan._writes.append(((key, model, hashes[i]), marks[i]))
            start = ends[i]
        plan.input_tokens = (ends[-1] if ends else 0) - start
        return plan

    def reset(self) -> None:
        """Forget every entry."""
        self._entries.clear()

    def store(self, entries: list[tuple[_CacheKey, Ttl]]) -> None:
        """Insert or refresh entries, each living its TTL from now (a longer TTL wins)."""
        now = self._clock()
        for cache_key, ttl in entries:
            old = self._entries.get(cache_key)
            if old is not None and old.expires_at > now and TTL_SECONDS[old.ttl] > TTL_SECONDS[ttl]:
                ttl = old.ttl
            self._entries[cache_key] = _Entry(now + TTL_SECONDS[ttl], ttl)
        self._commits += 1
        if self._commits % _SWEEP_EVERY == 0:
            self._entries = {k: e for k, e in self._entries.items() if e.expires_at > now}

    def _live(self, cache_key: _CacheKey, now: float) -> bool:
        entry = self._entries.get(cache_key)
        return entry is not None and entry.expires_at > now

    def _longest_hit(self, key: str, model: str, hashes: list[bytes], marks: dict[int, Ttl],
                     now: float) -> int | None:
        """The last segment index of the longest live cached prefix reachable by lookback.

        From each breakpoint the API looks at that block boundary and the ones before it, up
        to :data:`LOOKBACK_BLOCKS` boundaries, so an entry written at an earlier breakpoint is
        found again after a conversation grows by a few blocks.
        """
        best: int | None = None
        for mark in marks:
            for i in range(mark, max(-1, mark - LOOKBACK_BLOCKS), -1):
                if best is not None and i <= best:
                    break
                if self._live((key, model, hashes[i]), now):
                    best = i
                    break
        return best


def _prefix_ends(segments: list[Segment]) -> list[int]:
    """Cumulative token counts: ``ends[i]`` is the size of the prefix through segment ``i``."""
    ends, total = [], 0
    for segment in segments:
        total += segment.tokens
        ends.append(total)
    return ends


def _prefix_hashes(segments: list[Segment]) -> list[bytes]:
    """Running hashes: ``hashes[i]`` names the exact prefix through segment ``i``."""
    hashes, running = [], b""
    for segment in segments:
        running = hashlib.sha256(running + segment.digest).digest()
        hashes.append(running)
    return hashes
