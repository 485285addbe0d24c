"""Injected faults, drawn per request from a seeded generator, and what each one bills.

The billing rule (the emulator's bill, ``/_emulator/stats``, is what the Ledger must match):

====================  =====================================  =============================
fault                 what the client sees                   billed
====================  =====================================  =============================
``overloaded``        529 ``overloaded_error`` (SDK retries)  nothing
``server_error``      500 ``api_error`` (SDK retries)         nothing
``disconnect``        connection closed before any byte;     nothing (the model never ran)
                      ``APIConnectionError`` (SDK retries)
``lost_reply``        a whole (non-streamed) call runs; the    as a normal reply (the model
                      connection is closed instead of        ran; the reply was lost on
                      sending its reply: ``APIConnection``   the way back)
                      ``Error``
``stream_error``      a 200 stream with ``event: error``      input (uncached, cache writes
                      (``overloaded_error``) after about      and reads) + the output tokens
                      half of its deltas; not retried         already sent (= deltas sent)
``slow``              the reply ``slow_s`` later              as a normal reply
====================  =====================================  =============================

529 and 500 pass the rate limiter first (they count as a request and their input tokens, as
the API's do) and then give back the output reservation: they consume no output budget.
``disconnect`` happens before admission, so it consumes no rate-limit budget at all.

Outside injected faults: a client that goes away mid-stream is billed for its input and the
output tokens written before the write failed; a non-streaming request whose client goes away
is billed in full, because the model's work completes server-side (as the API's does, which
is why abandoned attempts cost money: ``docs/reliability.md`` §3).

Example:
    >>> injector = FaultInjector(Faults(overloaded=1.0), seed=0)
    >>> injector.draw(stream=False).kind
    'overloaded'
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from emulator.config import Faults

__all__ = ["NO_FAULT", "FaultInjector", "FaultPlan"]


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What goes wrong with one request."""

    kind: str | None = None
    """``overloaded``, ``server_error``, ``disconnect``, ``lost_reply``, ``stream_error`` or
    None."""
    extra_latency_s: float = 0.0
    """Added before the first token (the ``slow`` fault)."""


NO_FAULT = FaultPlan()


class FaultInjector:
    """Draws a :class:`FaultPlan` per request from the configured rates.

    Args:
        faults: The rates.
        seed: Seeds the draws, so a run with the same requests in the same order repeats.
    """

    def __init__(self, faults: Faults, *, seed: int) -> None:
        self._faults = faults
        self._active = faults.any
        self._rng = random.Random(seed ^ 0x5EED)

    def draw(self, *, stream: bool) -> FaultPlan:
        """The faults of the next request (``stream_error`` only applies to streams,
        ``lost_reply`` only to whole calls)."""
        if not self._active:
            return NO_FAULT
        f = self._faults
        u = self._rng.random()
        kind = None
        for name, rate in (("overloaded", f.overloaded), ("server_error", f.server_error),
                           ("disconnect", f.disconnect), ("lost_reply", f.lost_reply),
                           ("stream_error", f.stream_error)):
            if u < rate:
                kind = name
                break
            u -= rate
        if (kind == "stream_error" and not stream) or (kind == "lost_reply" and stream):
            kind = None
        slow = f.slow > 0 and self._rng.random() < f.slow
        if kind is None and not slow:
            return NO_FAULT
        return FaultPlan(kind, f.slow_s if slow else 0.0)
