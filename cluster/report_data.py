"""What a run's report shows, read from the Ledger's journal alone (no Ray, no live actors).

Every figure comes from the attempts the Ledger journaled for the run: each has its agent,
tier, status, send time, latency (send to last byte), time to first token and exact cost. So a
report can be drawn during a run, long after it, or on another machine with a copy of
``ledger.sqlite``.

The journal does not record how long an attempt waited in the RateLimiter before it was sent
(the ``raytroupe_limiter_wait_s`` Prometheus histogram has that: ``docs/observability.md``).
The report shows instead the attempts in flight over time, which is where a binding limit
shows: a flat top at the tier's ``max_concurrency`` while calls queue.

Example:
    >>> report = load_report(Path(".raytroupe") / "ledger.sqlite", None)  # doctest: +SKIP
    >>> report.duration_s, [bar.status for bar in report.attempts][:3]  # doctest: +SKIP
    (5.4, ['ok', 'ok', 'retried'])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from actors.errors import ConfigError
from actors.ledger_journal import JournalEntry, read_entries, read_run_ids
from actors.ledger_rollup import Rollup, is_billed, percentile, read_rollups

STATUSES = ("ok", "retried", "429", "error", "cache hit", "speculative loser", "cancelled")
"""How an attempt ended, as the timeline colours it (first match wins, in this order:
cache hit, 429, speculative loser, cancelled, error, retried, ok)."""

COLOURS = {"ok": "#2e7d32", "retried": "#f9a825", "429": "#c62828", "error": "#6a1b9a",
           "cache hit": "#1565c0", "speculative loser": "#9e9e9e", "cancelled": "#5d4037"}
"""One colour per status, shared by the HTML and the PNG (readable on white)."""

LIMITER_NOTE = ("Limiter wait is not in the Ledger's journal; shown instead: attempts in "
                "flight over time (a flat top at the tier's max_concurrency means calls were "
                "queueing). The ray_raytroupe_limiter_wait_s metric has the wait itself.")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One bar of the timeline: seconds from the run's first send."""

    agent: str
    tier: str
    start_s: float
    latency_s: float
    ttft_s: float | None
    status: str
    cost_usd: Decimal
    lane: int = 0
    """Sub-row within the agent's row: attempts of one agent that overlap in time (a mapper
    host serves many chunks at once) get lanes of their own, so none hides another."""

    @property
    def end_s(self) -> float:
        return self.start_s + self.latency_s


@dataclass(frozen=True)
class TierLatency:
    """Latency percentiles of one tier's API attempts (cache hits left out), in seconds."""

    tier: str
    attempts: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class RunReport:
    """Everything one report draws."""

    run_id: str
    topology: str
    started_at: float
    """Unix time of the run's first send."""
    duration_s: float
    """From the first send to the last byte of the last attempt."""
    totals: Rollup
    by_agent: list[Rollup]
    by_tier: list[Rollup]
    attempts: list[Attempt]
    latency: list[TierLatency]
    in_flight: list[tuple[float, int]]
    """``(seconds, attempts in flight from then on)``: a step series."""

    @property
    def agents(self) -> list[str]:
        """Timeline rows, in order of each agent's first send."""
        seen: dict[str, None] = {}
        for attempt in self.attempts:
            seen.setdefault(attempt.agent, None)
        return list(seen)

    @property
    def lanes(self) -> dict[str, int]:
        """How many lanes each agent's row has (its most attempts at once)."""
        lanes: dict[str, int] = {}
        for attempt in self.attempts:
            lanes[attempt.agent] = max(lanes.get(attempt.agent, 0), attempt.lane + 1)
        return {agent: lanes[agent] for agent in self.agents}

    @property
    def peak_in_flight(self) -> int:
        return max((n for _, n in self.in_flight), default=0)


def status_of(entry: JournalEntry) -> str:
    """The timeline status of one journaled attempt (see :data:`STATUSES`)."""
    record = entry.record
    if not is_billed(record.source, record.status):
        return "cache hit"
    if record.http_status == 429:
        return "429"
    if record.status == "cancelled":
        return "speculative loser" if record.speculative else "cancelled"
    if record.status in ("error", "possibly_billed"):
        return "error"
    return "retried" if record.attempt > 0 else "ok"


def short_agent(name: str) -> str:
    """``run/topology/researcher-2`` -> ``researcher-2`` (the run is the report's title)."""
    return name.rsplit("/", 1)[-1]


def latest_run(path: Path) -> str:
    """The run whose first attempt is the most recent (what ``raytroupe report`` shows)."""
    runs = read_rollups(path, None, "run")
    if not runs:
        raise ConfigError(f"the Ledger at {path} has no calls yet: run something first")
    return max(runs, key=lambda r: (r.first_started_at or 0.0, r.key)).key


def load_report(path: Path, run_id: str | None) -> RunReport:
    """Read run ``run_id`` (or the latest run) from the journal at ``path``.

    Raises:
        ConfigError: no journal at ``path``, or no such run (the known runs are named).
    """
    try:
        known = read_run_ids(path)
    except FileNotFoundError:
        raise ConfigError(f"no Ledger journal at {path}: run something first, or pass "
                          "--data-dir") from None
    run_id = run_id or latest_run(path)
    if run_id not in known:
        choices = ", ".join(known[-10:]) or "none yet"
        raise ConfigError(f"run {run_id!r} is not in the Ledger at {path} (runs: {choices})")
    entries = read_entries(path, run_id)
    if not entries:
        raise ConfigError(f"run {run_id!r} has no recorded calls yet in {path}")
    start = min(e.record.started_at for e in entries)
    attempts = [Attempt(agent=short_agent(e.record.agent), tier=e.record.tier,
                        start_s=e.record.started_at - start, latency_s=e.record.latency_s,
                        ttft_s=e.record.ttft_s, status=status_of(e), cost_usd=e.cost_usd)
                for e in entries]
    attempts = _in_lanes(attempts)
    by_tier = read_rollups(path, run_id, "tier")
    return RunReport(
        run_id=run_id, topology=entries[0].record.topology, started_at=start,
        duration_s=max(a.end_s for a in attempts), totals=read_rollups(path, run_id, "run")[0],
        by_agent=read_rollups(path, run_id, "agent"), by_tier=by_tier, attempts=attempts,
        latency=_tier_latency(attempts), in_flight=_in_flight(attempts))


def _in_lanes(attempts: list[Attempt]) -> list[Attempt]:
    """Give each attempt the first lane of its agent that is free when it starts."""
    ends: dict[str, list[float]] = {}
    placed = []
    for attempt in sorted(attempts, key=lambda a: a.start_s):
        lanes = ends.setdefault(attempt.agent, [])
        lane = next((i for i, end in enumerate(lanes) if end <= attempt.start_s), len(lanes))
        if lane == len(lanes):
            lanes.append(attempt.end_s)
        else:
            lanes[lane] = attempt.end_s
        placed.append(replace(attempt, lane=lane))
    return placed


def _tier_latency(attempts: list[Attempt]) -> list[TierLatency]:
    """p50/p95/p99 per tier over the attempts that reached the API (as the Ledger counts)."""
    tiers: dict[str, list[float]] = {}
    for attempt in attempts:
        if attempt.status != "cache hit":
            tiers.setdefault(attempt.tier, []).append(attempt.latency_s)
    result = []
    for tier, values in tiers.items():
        ordered = sorted(values)
        result.append(TierLatency(tier=tier, attempts=len(ordered),
                                  p50=percentile(ordered, 50), p95=percentile(ordered, 95),
                                  p99=percentile(ordered, 99)))
    return result


def _in_flight(attempts: list[Attempt]) -> list[tuple[float, int]]:
    """Attempts in flight as a step series: +1 at each send, -1 at each last byte."""
    changes = sorted([(a.start_s, 1) for a in attempts] + [(a.end_s, -1) for a in attempts],
                     key=lambda change: (change[0], change[1]))
    series, level = [(0.0, 0)], 0
    for at, delta in changes:
        level += delta
        if series[-1][0] == at:
            series[-1] = (at, level)
        else:
            series.append((at, level))
    return series
