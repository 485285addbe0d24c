"""A load test: N users, each with a session of its own, sending queries back to back.

Each user opens one session of the architecture (its own run id and agents, as N separate
clients would) and sends the next query as soon as the last one answered, until the duration
is over or the shared request count is used up. Latency is the wall time of one
``session.query`` as the user sees it; cost is the Ledger's, read per session at the end.
Every session shares the cluster's RateLimiter, so the test measures the system under its
real limits.

Example:
    >>> plan = LoadPlan(architecture="pipeline", users=4, duration_s=60, task="Summarise...")
    >>> plan.requests is None and plan.warmup
    True
    >>> result = await run_load(plan, runtime, on_tick=print)          # doctest: +SKIP
    >>> result.p95_s, result.throughput_rps, result.errors             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from actors.errors import ConfigError, RaytroupeError
from actors.ledger_rollup import percentile

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str, option: str) -> float:
    """``60s``, ``2m``, ``500ms``, ``1.5`` (seconds) -> seconds.

    Raises:
        ConfigError: not a positive duration.

    Example:
        >>> parse_duration("2m", "--duration")
        120.0
    """
    found = _DURATION.match(text or "")
    seconds = float(found.group(1)) * _UNIT_S[found.group(2)] if found else 0.0
    if seconds <= 0:
        raise ConfigError(f"{option} {text!r} is not a duration > 0 (e.g. 60s, 2m, 500ms)")
    return seconds


class LoadPlan(BaseModel):
    """What to run: which architecture, how many users, for how long or how many requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str
    users: int = Field(ge=1, le=1_000)
    duration_s: float | None = Field(default=None, gt=0)
    requests: int | None = Field(default=None, ge=1)
    task: Any
    """What every query asks (a prompt, or a map-reduce task)."""
    config: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    sla_p95_s: float | None = Field(default=None, gt=0)
    warmup: bool = True
    """Send each user's first query before the clock starts, uncounted: it spawns the
    session's agents (about a second each), which no later query pays."""

    @model_validator(mode="after")
    def _one_stop(self) -> LoadPlan:
        if (self.duration_s is None) == (self.requests is None):
            raise ValueError("give exactly one of --duration and --requests")
        return self


class LoadStats(BaseModel):
    """The figures so far (live) or at the end."""

    model_config = ConfigDict(frozen=True)

    users: int
    elapsed_s: float
    requests: int
    """Queries answered or failed."""
    in_flight: int
    errors: int
    error_kinds: dict[str, int] = Field(default_factory=dict)
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    throughput_rps: float = 0.0
    """Answered queries per second of wall time."""
    cost_usd: Decimal = Decimal(0)
    sla_p95_s: float | None = None
    sla_met: bool | None = None
    """None without an SLA; False also when no query answered at all."""


class _Tally:
    """Shared by the users: latencies, errors, the request budget."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.started = time.monotonic()
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.issued = 0
        self.cost = Decimal(0)
        self.warming = plan.users if plan.warmup else 0
        self.warm = asyncio.Event()
        if not self.warming:
            self.warm.set()

    async def warmed(self) -> None:
        """One user is warm; wait for the others, then start the clock (once)."""
        self.warming -= 1
        if self.warming <= 0 and not self.warm.is_set():
            self.started = time.monotonic()
            self.warm.set()
        await self.warm.wait()

    def take(self) -> bool:
        """May a user send one more query?"""
        if self.plan.requests is not None:
            if self.issued >= self.plan.requests:
                return False
        elif time.monotonic() - self.started >= (self.plan.duration_s or 0):
            return False
        self.issued += 1
        return True

    def stats(self) -> LoadStats:
        elapsed = time.monotonic() - self.started if self.warm.is_set() else 0.0
        ordered = sorted(self.latencies)
        p95 = percentile(ordered, 95)
        sla = self.plan.sla_p95_s
        return LoadStats(
            users=self.plan.users, elapsed_s=elapsed,
            requests=len(ordered) + sum(self.errors.values()), in_flight=self.in_flight,
            errors=sum(self.errors.values()), error_kinds=dict(self.errors),
            p50_s=percentile(ordered, 50), p95_s=p95, p99_s=percentile(ordered, 99),
            throughput_rps=len(ordered) / elapsed if elapsed > 0 else 0.0, cost_usd=self.cost,
            sla_p95_s=sla, sla_met=None if sla is None else (p95 is not None and p95 <= sla))


async def run_load(plan: LoadPlan, runtime: Any,
                   on_tick: Callable[[LoadStats], None] | None = None,
                   tick_s: float = 0.5) -> LoadStats:
    """Run ``plan`` on ``runtime``; call ``on_tick`` with the figures every ``tick_s``."""
    from topologies import create_session

    tally = _Tally(plan)
    sessions = [create_session(plan.architecture, config=plan.config, model=plan.model,
                               runtime=runtime) for _ in range(plan.users)]
    users = [asyncio.create_task(_user(session, plan.task, tally)) for session in sessions]
    try:
        while not all(user.done() for user in users):
            await asyncio.wait(users, timeout=tick_s)
            if on_tick is not None:
                on_tick(tally.stats())
        for user in users:
            tally.cost += user.result()
    finally:
        for user in users:
            user.cancel()
        await asyncio.gather(*users, return_exceptions=True)
    return tally.stats()


async def _user(session: Any, task: Any, tally: _Tally) -> Decimal:
    """One user: queries back to back; returns what its session cost (from the Ledger)."""
    async with session:
        if tally.plan.warmup:
            try:
                await session.query(task)
            finally:
                await tally.warmed()
        while tally.take():
            tally.in_flight += 1
            sent = time.monotonic()
            try:
                await session.query(task)
            except RaytroupeError as exc:
                tally.errors[type(exc).__name__] += 1
            else:
                tally.latencies.append(time.monotonic() - sent)
            finally:
                tally.in_flight -= 1
        totals = await session.ledger_rollup("run")
    return totals[0].cost_usd if totals else Decimal(0)


_OPTIONS = {"users": "--users", "duration_s": "--duration", "requests": "--requests",
            "sla_p95_s": "--sla-p95", "architecture": "ARCH"}


def check_plan(**fields: Any) -> LoadPlan:
    """Build a plan, turning pydantic's complaint into one line naming the option."""
    from pydantic import ValidationError

    try:
        return LoadPlan(**fields)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = _OPTIONS.get(str(error["loc"][0]) if error["loc"] else "", "loadtest")
        raise ConfigError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None
