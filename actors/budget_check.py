"""Whether a run has a budget, as an Agent asks before every call: kept fresh off the call's path.

Why: a run without a cap needs no reservation, which saves a Ledger round trip per call, but a
cap set while a run is going must still bind within ``RECHECK_S``. Asking the Ledger again
once the answer was ``RECHECK_S`` old put that round trip (2-3 ms on 2 cores) in front of one
call in ten at five calls a second (``docs/performance.md``, "Latency of one call at a time").
So a call that finds the answer more than half that old keeps using it and has it refreshed in
the background, a moment after it started (its own request leaves first); only an answer older
than ``RECHECK_S`` (a run calling less often than that) is waited for, as before. Either way a
call acts on what the Ledger said at most ``RECHECK_S`` before it.

Example::

    caps = BudgetCheck(lambda run_id: ledger.capped(run_id))
    if await caps.capped("r1"):
        ...  # reserve the attempt's worst case first
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from actors.limiter_buckets import Clock, LoopClock

_log = logging.getLogger(__name__)

RECHECK_S = 2.0
"""The oldest answer a call may act on."""
REFRESH_AFTER_S = 0.01
"""How long after the call that found its answer aging the refresh goes out: after the call's
own request (a Ray call costs a few hundred microseconds of this process's loop)."""


class BudgetCheck:
    """Per process: whether each run has a cap, refreshed before the answer gets too old.

    Args:
        ask: Asks the Ledger whether a run has a cap (one RPC).
        recheck_s: The oldest answer a call may act on.
        clock: Time and timers (tests pass a fake one).
    """

    def __init__(self, ask: Callable[[str], Awaitable[bool]], *, recheck_s: float = RECHECK_S,
                 clock: Clock | None = None) -> None:
        self._ask, self._recheck_s = ask, recheck_s
        self._clock: Clock = clock or LoopClock()
        self._known: dict[str, tuple[bool, float]] = {}
        self._refreshing: set[str] = set()
        self._asking: dict[str, asyncio.Future[bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"BudgetCheck({len(self._known)} run(s), refreshing {len(self._refreshing)})"

    async def capped(self, run_id: str) -> bool:
        """Whether ``run_id`` has a cap, as the Ledger said at most ``recheck_s`` ago.

        Raises:
            Whatever the Ledger call raises, when the answer had to be waited for.
        """
        capped, asked_at = self._known.get(run_id, (True, -math.inf))
        age = self._clock.now() - asked_at
        if age >= self._recheck_s:
            return await self._fetch(run_id)
        if age >= self._recheck_s / 2 and run_id not in self._refreshing:
            self._refreshing.add(run_id)
            self._clock.call_at(self._clock.now() + REFRESH_AFTER_S,
                                lambda: self._start_refresh(run_id))
        return capped

    async def _fetch(self, run_id: str) -> bool:
        """One question in flight per run: the calls that find the answer too old together
        (a busy host's first calls of a run, 25 at once) share it instead of asking one each."""
        pending = self._asking.get(run_id)
        if pending is None:
            pending = self._asking[run_id] = asyncio.ensure_future(self._ask_once(run_id))
            pending.add_done_callback(lambda done: self._asked(run_id, done))
        return await asyncio.shield(pending)

    async def _ask_once(self, run_id: str) -> bool:
        asked_at = self._clock.now()  # the answer is as old as the question
        capped = await self._ask(run_id)
        if self._known.get(run_id, (True, -math.inf))[1] <= asked_at:
            self._known[run_id] = (capped, asked_at)
        return capped

    def _asked(self, run_id: str, done: asyncio.Future[bool]) -> None:
        self._asking.pop(run_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have been cancelled meanwhile

    def _start_refresh(self, run_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._refresh(run_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, run_id: str) -> None:
        """A background refresh; a failure leaves the old answer, which then ages out."""
        try:
            await self._fetch(run_id)
        except Exception as exc:  # the next call past recheck_s asks again and sees the error
            _log.debug("budget check of run %s failed in the background: %r", run_id, exc)
        finally:
            self._refreshing.discard(run_id)
