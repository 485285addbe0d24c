"""The Ledger's Prometheus metrics, exported by Ray on each node's metrics port.

Ray adds a ``ray_`` prefix and, to counters, a ``_total`` suffix: ``raytroupe_ledger_tokens``
is scraped as ``ray_raytroupe_ledger_tokens_total{kind="input",agent=...}``. Ray tags a metric
with nothing but its worker id (docs/ray-facts.md §5), so every metric carries the run, topology,
agent, tier and model itself. Tag keys are declared once, here.

Metrics count newly journaled attempts only: a duplicate record is not counted twice here
either. A restarted Ledger starts its counters from zero in a new process (a new ``WorkerId``
series), which Prometheus' ``rate``/``increase`` handle as a counter reset.

Outside Ray (tests calling the class directly) Ray's metric objects are inert, so no switch is
needed.

A batch of records is counted with one increment per counter and tag set, not per record: one
``Counter.inc`` costs ~6 µs of the Ledger's loop (tag merging and checks in Python, then the
recorder), and counting each record's five figures apart was 32 of the Ledger's ~55 µs per
record (``docs/performance.md``). Histograms still take one observation per record.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from decimal import Decimal
from functools import cache

from ray.util.metrics import Counter, Histogram

from actors.ledger_journal import JournalEntry
from actors.ledger_rollup import is_billed

TAG_KEYS = ("run_id", "topology", "agent", "tier", "model")
"""Tags every Ledger metric carries."""

_LATENCY_BOUNDS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600]
_TTFT_BOUNDS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]
_TOKEN_KINDS = (("input", ("input_tokens",)), ("output", ("output_tokens",)),
                ("cache_write", ("cache_write_5m", "cache_write_1h")),
                ("cache_read", ("cache_read",)))


class LedgerMetrics:
    """Counters and histograms fed by each newly journaled attempt.

    Example:
        >>> metrics = ledger_metrics()
        >>> metrics.observe(entry)
    """

    def __init__(self) -> None:
        self.tokens = Counter("raytroupe_ledger_tokens", "Billed tokens by kind.",
                              tag_keys=(*TAG_KEYS, "kind"))
        self.cost = Counter("raytroupe_ledger_cost_usd", "Billed USD.", tag_keys=TAG_KEYS)
        self.requests = Counter("raytroupe_ledger_requests", "Attempts by how they ended.",
                                tag_keys=(*TAG_KEYS, "status"))
        self.retries = Counter("raytroupe_ledger_retries", "Attempts after a call's first.",
                               tag_keys=TAG_KEYS)
        self.rate_limited = Counter("raytroupe_ledger_rate_limited", "Attempts answered 429.",
                                    tag_keys=TAG_KEYS)
        self.budget_refusals = Counter("raytroupe_ledger_budget_refusals",
                                       "Attempts refused because the run's budget was reached.",
                                       tag_keys=("run_id",))
        self.latency = Histogram("raytroupe_ledger_latency_s", "Seconds from send to last byte.",
                                 boundaries=_LATENCY_BOUNDS, tag_keys=TAG_KEYS)
        self.ttft = Histogram("raytroupe_ledger_ttft_s", "Seconds to the first streamed token.",
                              boundaries=_TTFT_BOUNDS, tag_keys=TAG_KEYS)

    def observe(self, entry: JournalEntry) -> None:
        """Count one newly journaled attempt."""
        self.observe_batch((entry,))

    def observe_batch(self, entries: Iterable[JournalEntry]) -> None:
        """Count newly journaled attempts: their sums per tag set, one increment each."""
        tag_sets: dict[tuple[str, ...], dict[str, str]] = {}
        counts: Tally[tuple[str, tuple[str, ...], str]] = Tally()
        costs: dict[tuple[str, ...], Decimal] = {}
        for entry in entries:
            record = entry.record
            at = (record.run_id, record.topology, record.agent, record.tier, record.model)
            tags = tag_sets.get(at)
            if tags is None:
                tags = tag_sets[at] = dict(zip(TAG_KEYS, at, strict=True))
            counts["requests", at, record.status] += 1
            if record.attempt > 0:
                counts["retries", at, ""] += 1
            if record.http_status == 429:
                counts["rate_limited", at, ""] += 1
            if not is_billed(record.source, record.status):
                continue
            usage = record.usage
            for kind, fields in _TOKEN_KINDS:
                counts["tokens", at, kind] += sum(getattr(usage, name) for name in fields)
            costs[at] = costs.get(at, Decimal(0)) + entry.cost_usd
            self.latency.observe(record.latency_s, tags=tags)
            if record.ttft_s is not None:
                self.ttft.observe(record.ttft_s, tags=tags)
        for (name, at, detail), count in counts.items():
            if count:  # Ray counters refuse increments that are not > 0
                extra = {"status": detail} if name == "requests" else \
                    {"kind": detail} if name == "tokens" else {}
                getattr(self, name).inc(count, tags={**tag_sets[at], **extra})
        for at, cost in costs.items():
            if cost > 0:
                self.cost.inc(float(cost), tags=tag_sets[at])

    def refused(self, run_id: str) -> None:
        """Count one reservation refused by a run's budget."""
        self.budget_refusals.inc(1, tags={"run_id": run_id})


@cache
def ledger_metrics() -> LedgerMetrics:
    """The process's one set of Ledger metrics (Ray registers each metric name once)."""
    return LedgerMetrics()
