"""Roll-ups of journaled attempts: counts, tokens, exact cost and latency percentiles per key.

The Ledger actor and the ``raytroupe ledger`` command both call :func:`read_rollups` on the
journal, so what the command prints is what the actor answers.

Counting rules, chosen so that the roll-up equals the provider's bill:
- ``attempts`` counts every journaled attempt; ``calls`` the distinct ``call_id``s among them;
  ``retries`` the attempts after a call's first (``attempt > 0``).
- Tokens and cost count what the provider billed: a response-cache hit (``source="cache"``)
  costs nothing and its tokens were never consumed, so it adds neither (BerriAI/litellm#39057
  replayed them into token totals and double counted). What a hit would have cost (its
  recorded original usage, priced from the price table) goes to ``saved_usd`` instead.
- An attempt sent without an answer (``status="possibly_billed"``: connection lost, timeout)
  may or may not be on the bill, so its tokens and cost (its reservation: input estimate +
  ``max_tokens``) go to the ``possibly_billed_*`` fields, not to the billed totals: the bill
  lies between ``cost_usd`` and ``cost_usd + possibly_billed_usd`` (``docs/reliability.md``).
- Latency percentiles cover attempts that went to the API (cache hits would drag them to 0);
  ``ttft_p50`` covers streamed attempts that reported a first token.
- Percentiles use the nearest-rank method: the reported value is one that was observed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict

from actors.errors import UsageError
from actors.ledger_journal import RollupRow, iter_rollup_rows
from actors.tiers import PriceTable, load_price_table

RollupBy = Literal["run", "agent", "tier", "topology", "model"]
"""What a roll-up groups attempts by."""

ROLLUP_KEYS: tuple[RollupBy, ...] = get_args(RollupBy)


class Rollup(BaseModel):
    """Totals of the attempts sharing one key (a run, an agent, a tier, ...).

    Example:
        >>> [r] = await ledger.rollup.remote(run_id="r1", by="run")
        >>> r.cost_usd, r.calls, r.latency_p95
        (Decimal('0.0123'), 12, 1.84)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["rollup"] = "rollup"
    by: RollupBy
    """The grouping: ``run``, ``agent``, ``tier``, ``topology`` or ``model``."""
    key: str
    """The run id, agent name, tier, topology or model id of this group."""
    calls: int = 0
    """Logical calls (distinct call ids)."""
    attempts: int = 0
    """HTTP attempts, retries included (and response-cache hits)."""
    errors: int = 0
    """Attempts that ended in an error."""
    rate_limited: int = 0
    """Attempts answered with 429."""
    retries: int = 0
    """Attempts after the first of their call."""
    cancelled: int = 0
    """Attempts we abandoned (speculative losers, cancelled streams)."""
    cache_hits: int = 0
    """Calls served from the response cache, at no cost."""
    escalations: int = 0
    """Billed replies that failed their validation, so their call went one tier up."""
    input_tokens: int = 0
    """Billed uncached input tokens."""
    output_tokens: int = 0
    """Billed output tokens."""
    cache_write_5m: int = 0
    """Billed 5-minute cache writes."""
    cache_write_1h: int = 0
    """Billed 1-hour cache writes."""
    cache_read: int = 0
    """Billed cache reads."""
    cost_usd: Decimal = Decimal(0)
    """Exact cost in USD."""
    possibly_billed: int = 0
    """Attempts sent that got no answer (lost connection, timeout): maybe billed, maybe not."""
    possibly_billed_input_tokens: int = 0
    """Their input, as reserved (the estimate)."""
    possibly_billed_output_tokens: int = 0
    """Their output, as reserved (all of ``max_tokens``)."""
    possibly_billed_usd: Decimal = Decimal(0)
    """The most they may have cost; not in ``cost_usd``."""
    saved_usd: Decimal = Decimal(0)
    """What the response-cache hits would have cost (their original calls' price)."""
    latency_p50: float | None = None
    """Median seconds from sending an attempt to its last byte; None without API attempts."""
    latency_p95: float | None = None
    """95th percentile latency in seconds."""
    latency_p99: float | None = None
    """99th percentile latency in seconds."""
    ttft_p50: float | None = None
    """Median time to first token of streamed attempts, in seconds."""
    first_started_at: float | None = None
    """Unix time the group's first attempt was sent."""

    @property
    def prompt_cache_hit_rate(self) -> float | None:
        """Share of billed input tokens read from the prompt cache; None without input."""
        total = self.input_tokens + self.cache_write_5m + self.cache_write_1h + self.cache_read
        return self.cache_read / total if total else None


def check_rollup_by(by: str) -> RollupBy:
    """Return ``by`` if it is a roll-up key; raise ``UsageError`` naming the choices if not."""
    if by not in ROLLUP_KEYS:
        raise UsageError(f"cannot roll up by {by!r}: choose one of {', '.join(ROLLUP_KEYS)}")
    return by  # type: ignore[return-value]


def is_billed(source: str, status: str) -> bool:
    """False for a response-cache hit, which never reached the provider."""
    return source != "cache" and status != "cache_hit"


def percentile(ordered: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when it is empty.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.0
    """
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def read_rollups(path: Path, run_id: str | None, by: RollupBy,
                 prices: PriceTable | None = None) -> list[Rollup]:
    """Roll up the journal at ``path`` (one run, or all of them) by ``by``, oldest group first.

    Raises:
        UsageError: ``by`` is not one of run, agent, tier, topology, model.
        FileNotFoundError: there is no journal at ``path``.

    Example:
        >>> [r.key for r in read_rollups(path, "r1", "tier")]
        ['haiku', 'sonnet']
    """
    by = check_rollup_by(by)
    return rollup(iter_rollup_rows(path, run_id, by), by, prices)


def rollup(rows: Iterable[RollupRow], by: RollupBy,
           prices: PriceTable | None = None) -> list[Rollup]:
    """Total ``rows`` per key, oldest group first (rows carry their group key).

    ``prices`` prices the savings of response-cache hits (default: the shipped table).
    """
    groups: dict[str, _Totals] = {}
    prices = prices or load_price_table()
    for row in rows:
        totals = groups.get(row.key)
        if totals is None:
            totals = groups[row.key] = _Totals(prices)
        totals.add(row)
    rolled = [totals.finish(by, key) for key, totals in groups.items()]
    return sorted(rolled, key=lambda r: (r.first_started_at or 0.0, r.key))


def empty_rollup(by: RollupBy, key: str) -> Rollup:
    """The roll-up of a group without attempts (a run that made no call yet)."""
    return Rollup(by=by, key=key)


class _Totals:
    """Running totals of one group (mutable; turned into a frozen ``Rollup`` at the end)."""

    __slots__ = ("call_ids", "cost", "counts", "first", "latencies", "prices", "saved",
                 "tokens", "ttfts", "unsure", "unsure_cost")

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.saved = Decimal(0)
        self.call_ids: set[str] = set()
        self.counts = dict.fromkeys(("attempts", "errors", "rate_limited", "retries",
                                     "cancelled", "cache_hits", "escalations"), 0)
        self.tokens = dict.fromkeys(("input_tokens", "output_tokens", "cache_write_5m",
                                     "cache_write_1h", "cache_read"), 0)
        self.cost = Decimal(0)
        self.unsure = {"possibly_billed": 0, "possibly_billed_input_tokens": 0,
                       "possibly_billed_output_tokens": 0}
        self.unsure_cost = Decimal(0)
        self.latencies: list[float] = []
        self.ttfts: list[float] = []
        self.first: float | None = None

    def add(self, row: RollupRow) -> None:
        self.call_ids.add(row.call_id)
        if self.first is None or row.started_at < self.first:
            self.first = row.started_at
        counts = self.counts
        counts["attempts"] += 1
        counts["errors"] += row.status in ("error", "possibly_billed")
        counts["rate_limited"] += row.http_status == 429
        counts["retries"] += row.attempt > 0
        counts["cancelled"] += row.status == "cancelled"
        counts["escalations"] += row.status == "escalated"
        if not is_billed(row.source, row.status):
            counts["cache_hits"] += 1
            self.saved += self._price(row)
            return
        self.latencies.append(row.latency_s)
        if row.status == "possibly_billed":
            self._add_unsure(row)
            return
        tokens = self.tokens
        tokens["input_tokens"] += row.input_tokens
        tokens["output_tokens"] += row.output_tokens
        tokens["cache_write_5m"] += row.cache_write_5m
        tokens["cache_write_1h"] += row.cache_write_1h
        tokens["cache_read"] += row.cache_read
        self.cost += Decimal(row.cost_usd)
        if row.ttft_s is not None:
            self.ttfts.append(row.ttft_s)

    def _add_unsure(self, row: RollupRow) -> None:
        unsure = self.unsure
        unsure["possibly_billed"] += 1
        unsure["possibly_billed_input_tokens"] += (row.input_tokens + row.cache_write_5m
                                                   + row.cache_write_1h + row.cache_read)
        unsure["possibly_billed_output_tokens"] += row.output_tokens
        self.unsure_cost += Decimal(row.cost_usd)

    def _price(self, row: RollupRow) -> Decimal:
        """What a hit's original call cost (0 for a model the table does not know)."""
        try:
            spec = self.prices.spec(row.model)
        except KeyError:
            return Decimal(0)
        return spec.cost_usd(input_tokens=row.input_tokens, output_tokens=row.output_tokens,
                             cache_write_5m=row.cache_write_5m,
                             cache_write_1h=row.cache_write_1h, cache_read=row.cache_read)

    def finish(self, by: RollupBy, key: str) -> Rollup:
        latencies, ttfts = sorted(self.latencies), sorted(self.ttfts)
        return Rollup(
            by=by, key=key, calls=len(self.call_ids), **self.counts, **self.tokens,
            cost_usd=self.cost, saved_usd=self.saved, **self.unsure,
            possibly_billed_usd=self.unsure_cost, latency_p50=percentile(latencies, 50),
            latency_p95=percentile(latencies, 95), latency_p99=percentile(latencies, 99),
            ttft_p50=percentile(ttfts, 50), first_started_at=self.first,
        )
