"""Whether holding asks and replies for company pays: fast calls (CPU-bound), or slow ones.

Batching many asks per Ray call (``actors/agent_batch.py``) needs holds: the caller keeps a
freed slot's ask up to 20 ms for company, the host keeps a finished reply up to 20 ms for the
rest of its batch. They pay when the API answers fast: then the CPU per call bounds the
throughput (50 calls in flight at ~2.5 ms of CPU each fill two cores once calls take less than
~60 ms), and ten asks per Ray call instead of one or two is most of the CPU saved at latency 0.
When the API takes hundreds of milliseconds the processes are mostly idle: a 20 ms hold then
adds its wait to every call, and keeps a wave's calls in step, so each wave queues behind its
hosts' serial sends and parses again (measured: ``docs/performance.md``, "The map phase's wall
time"). So both sides hold 20 ms only while the calls they see are fast, and otherwise a small
share of the calls' latency: enough to keep a wave's replies, which come back over a few
milliseconds, in one Ray item and their successors in one Ray call.

"Fast" is read from the replies' own latency (``Reply.latency_s``, the host's time from the ask
to the reply: the API's latency plus any wait for the host's CPU): an exponential average below
``FAST_CALL_S``. It starts slow: no hold until fast replies have been seen.

Example::

    pace = CallPace()
    pace.saw(reply.latency_s)      # every reply
    hold = pace.hold_s             # 0.02 while calls are fast, else 2 % of their latency
"""

from __future__ import annotations

__all__ = ["FAST_CALL_S", "HOLD_S", "HOSTED", "SLOW_HOLD_SHARE", "CallPace"]

HOLD_S = 0.020
"""Longest hold of an ask or a reply while calls are fast (30 ms measured no better)."""
FAST_CALL_S = 0.100
"""Calls answered faster than this on average are CPU-bound enough for holds to pay.

Measured at 50 in flight on 2 cores: replies take 8-24 ms at API latency 0 (p10-p90), and at
least the API's latency (200 ms) otherwise; a real API takes 0.5 s and more."""
SLOW_HOLD_SHARE = 0.02
"""Share of a slow call's latency a hold may take: 4 ms at 200 ms, where a wave's replies
come back over 10-20 ms (its host sent them one after the other), so a host still answers in
items of several replies and its caller sends their successors together (CPU per call: no
hold at all doubled the driver's and added half to the hosts')."""
_WEIGHT = 0.1
"""Weight of each new reply in the average (about the last ten replies count)."""


class CallPace:
    """The running average of the call latency one process sees, and the hold it implies."""

    __slots__ = ("latency_s",)

    def __init__(self) -> None:
        self.latency_s: float | None = None
        """The exponential average of the replies' latency (None: none seen yet)."""

    def __repr__(self) -> str:
        return f"CallPace(latency_s={self.latency_s}, hold_s={self.hold_s})"

    def saw(self, latency_s: float) -> None:
        """Count one reply's latency."""
        if self.latency_s is None:
            self.latency_s = latency_s
        else:
            self.latency_s += _WEIGHT * (latency_s - self.latency_s)

    @property
    def fast(self) -> bool:
        """Calls are fast: holding for company pays."""
        return self.latency_s is not None and self.latency_s < FAST_CALL_S

    @property
    def hold_s(self) -> float:
        """How long an ask or a finished reply may wait for company now: ``HOLD_S`` while
        calls are fast, else ``SLOW_HOLD_SHARE`` of their latency (at most ``HOLD_S``)."""
        if self.latency_s is None:
            return 0.0
        if self.latency_s < FAST_CALL_S:
            return HOLD_S
        return min(HOLD_S, SLOW_HOLD_SHARE * self.latency_s)


HOSTED = CallPace()
"""The replies this process's agents gave through ``Agent.ask_batch``: whether the host holds a
finished reply for the rest of its batch (one process's CPU is what the hold saves)."""
