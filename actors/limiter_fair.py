"""The order in which one key's parked grant requests are served: fair between jobs.

First come, first served across the whole cluster lets a job that keeps many requests parked
(two big map-reduce runs) take nearly all of a binding limit from a job that asks for little
(issue 8 measured a short job at 7.5 % of the tokens while three jobs ran). So waiters queue
per *job*, and jobs are served in start-time fair queueing order (Goyal, Vin & Cheng,
"Start-time fair queueing", SIGCOMM 1996): each job has a virtual finish time that grows by
the cost of what it is granted, and the job with the smallest one goes next. A need's cost is
its dominant share (its largest fraction of a bucket's capacity), so a job of big calls and a
job of small calls get the same share of the limit that binds, not the same number of calls.

A job that comes back to an empty queue starts at the current virtual time: it banks no credit
while idle, and it loses none in the moment between one grant and its next request (which
deficit round robin would take from a job that asks for one call at a time). Within a job,
requests stay first come, first served; the waiter whose turn it is blocks the others while it
waits for refill, so a big request is never starved by small ones.

Hand-written: queueing libraries (``asyncio.PriorityQueue``, ``aiolimiter``) have no notion of
classes sharing a rate, and this one must drop cancelled waiters and be iterated for status.

Example:
    >>> q = FairQueue()
    >>> for job, name in (("big", "b1"), ("big", "b2"), ("small", "s1")):
    ...     q.push(job, name)
    >>> q.turn(lambda waiter: False)
    'b1'
    >>> q.served("b1", 1.0); q.turn(lambda waiter: False)
    's1'
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from actors.limits import Need, TierLimits

_EPS = 1e-9


class FairQueue:
    """Per-job FIFO queues of waiters, served by the smallest virtual finish time per job."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[Any]] = {}
        """Jobs with waiters (insertion order breaks ties)."""
        self._finish: dict[str, float] = {}
        """Each job's virtual time: the sum of the costs it was granted while it waited."""
        self._vtime = 0.0
        """The start time of the last need served: where a job returning from idle starts."""
        self._job_of: dict[int, str] = {}
        self._arrivals = itertools.count()
        self._since: dict[str, int] = {}

    def push(self, job: str, waiter: Any) -> None:
        queue = self._queues.get(job)
        if queue is None:
            queue = self._queues[job] = deque()
            self._finish[job] = max(self._finish.get(job, self._vtime), self._vtime)
            self._since[job] = next(self._arrivals)
        queue.append(waiter)
        self._job_of[id(waiter)] = job

    def __iter__(self) -> Iterator[Any]:
        for queue in self._queues.values():
            yield from queue

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def remove(self, waiter: Any) -> None:
        job = self._job_of.pop(id(waiter), None)
        if job is not None and waiter in self._queues[job]:
            self._queues[job].remove(waiter)
            self._drop_if_empty(job)

    def turn(self, dead: Callable[[Any], bool]) -> Any | None:
        """The waiter to serve next (dropping ``dead`` ones), or None when none is left."""
        for job in list(self._queues):
            queue = self._queues[job]
            while queue and dead(queue[0]):
                self._job_of.pop(id(queue.popleft()), None)
            self._drop_if_empty(job)
        if not self._queues:
            return None
        job = min(self._queues, key=lambda j: (self._finish[j], self._since[j]))
        return self._queues[job][0]

    def allowance(self, waiter: Any) -> float:
        """How much more than one need the waiter's job may take before another job's turn:
        the gap to the next job's virtual time (unbounded when it is the only job waiting)."""
        job = self._job_of[id(waiter)]
        others = [f for j, f in self._finish.items() if j != job and j in self._queues]
        return min(others, default=float("inf")) - self._finish[job]

    def served(self, waiter: Any, spent: float) -> None:
        """``waiter`` was granted needs costing ``spent`` and leaves the queue."""
        job = self._job_of.pop(id(waiter), None)
        if job is None:
            return
        alone = len(self._queues) == 1
        # The clock is the start of what was served; a job served alone owes nobody, so the
        # clock moves with it and a job arriving next starts level with it.
        self._vtime = max(self._vtime, self._finish[job] + (spent if alone else 0.0))
        self._finish[job] += spent
        self._queues[job].remove(waiter)
        self._drop_if_empty(job)

    def _drop_if_empty(self, job: str) -> None:
        """A job with nobody queued leaves the turns; its virtual time is kept only while it
        is ahead of the clock (a job that comes back later starts at the clock anyway)."""
        if self._queues.get(job) is None or self._queues[job]:
            return
        del self._queues[job]
        self._since.pop(job, None)
        for idle in [j for j, f in self._finish.items()
                     if j not in self._queues and f <= self._vtime + _EPS]:
            del self._finish[idle]


def dominant_cost(need: Need, limits: TierLimits) -> float:
    """A need's largest share of one bucket's capacity: what fairness between jobs counts."""
    return max(int(need.request) / limits.rpm, need.input_tokens / limits.itpm,
               need.output_tokens / limits.otpm)
