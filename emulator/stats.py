"""The emulator's bill and counters: what ``GET /_emulator/stats`` reports.

The bill is the ground truth the Ledger is held to, to the token: tokens are summed per model
(batch and live calls apart, because batches are discounted) and priced only when a snapshot
is taken, from the one price table, so the cost is exact (``Decimal``, sent as a string).
Counting is plain integer arithmetic on the hot path; nothing here allocates a model per call.

Example:
    >>> from actors.tiers import load_price_table
    >>> stats = Stats(load_price_table())
    >>> stats.bill("claude-haiku-5-5", batch=False, input_tokens=1_000_000, output_tokens=0)
    >>> stats.snapshot()["total_cost_usd"]
    '0.100'
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from actors.tiers import PriceTable

__all__ = ["RATE_LIMIT_KINDS", "Stats"]

RATE_LIMIT_KINDS = ("requests", "input_tokens", "output_tokens", "concurrency")

# Index of each tally in a bill row (a list, so adding to it allocates nothing).
_REQUESTS, _IN, _OUT, _W5M, _W1H, _READ = range(6)
_ROW_FIELDS = ("requests", "input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h",
               "cache_read")


class Stats:
    """Counters of one emulator since start (or the last reset).

    Args:
        prices: Prices the bill (batch rows at its ``batch_discount``).
    """

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices
        self._sections: dict[str, Callable[[], dict[str, Any]]] = {}
        self.reset()

    def reset(self) -> None:
        """Zero every counter and the bill (registered sections reset themselves)."""
        self.requests = 0
        """Every ``POST /v1/messages``, whatever became of it."""
        self.by_status: dict[int, int] = {}
        self.rate_limited = dict.fromkeys(RATE_LIMIT_KINDS, 0)
        self.server_errors = 0
        self.overloaded = 0
        self.disconnects = 0
        self.lost_replies = 0
        self.stream_errors = 0
        self.client_aborts = 0
        self.in_flight = 0
        self.peak_concurrency = 0
        self.count_tokens_requests = 0
        self._rows: dict[tuple[str, bool], list[int]] = {}

    def enter(self) -> None:
        """A Messages request started (for ``peak_concurrency``)."""
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.peak_concurrency:
            self.peak_concurrency = self.in_flight

    def leave(self, status: int | None) -> None:
        """A Messages request ended with ``status`` (None: the connection was dropped)."""
        self.in_flight -= 1
        if status is not None:
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def bill(self, model: str, *, batch: bool, input_tokens: int, output_tokens: int,
             cache_write_5m: int = 0, cache_write_1h: int = 0, cache_read: int = 0) -> None:
        """Add one billed call to the bill."""
        row = self._rows.get((model, batch))
        if row is None:
            row = self._rows[(model, batch)] = [0, 0, 0, 0, 0, 0]
        row[_REQUESTS] += 1
        row[_IN] += input_tokens
        row[_OUT] += output_tokens
        row[_W5M] += cache_write_5m
        row[_W1H] += cache_write_1h
        row[_READ] += cache_read

    def add_section(self, name: str, provider: Callable[[], dict[str, Any]]) -> None:
        """Add a top-level ``name`` to every snapshot, read from ``provider`` (e.g. batches)."""
        self._sections[name] = provider

    def snapshot(self) -> dict[str, Any]:
        """Everything, as the stats route returns it (JSON-ready)."""
        billed, total = self._billed()
        out: dict[str, Any] = {
            "requests": self.requests,
            "responses_by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rate_limited": dict(self.rate_limited),
            "server_errors": self.server_errors,
            "overloaded": self.overloaded,
            "disconnects": self.disconnects,
            "lost_replies": self.lost_replies,
            "stream_errors": self.stream_errors,
            "client_aborts": self.client_aborts,
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "count_tokens_requests": self.count_tokens_requests,
            "billed": billed,
            "total_cost_usd": _money(total),
        }
        for name, provider in self._sections.items():
            out[name] = provider()
        return out

    def _billed(self) -> tuple[dict[str, dict[str, Any]], Decimal]:
        """Per-model totals and cost; batch rows priced at the discount."""
        per_model: dict[str, dict[str, Any]] = {}
        grand = Decimal(0)
        for (model, batch), row in sorted(self._rows.items()):
            entry = per_model.setdefault(model, {**dict.fromkeys(_ROW_FIELDS, 0),
                                                 "batch_requests": 0, "cost": Decimal(0)})
            for name, value in zip(_ROW_FIELDS, row, strict=True):
                entry[name] += value
            if batch:
                entry["batch_requests"] += row[_REQUESTS]
            cost = self._prices.spec(model).cost_usd(
                input_tokens=row[_IN], output_tokens=row[_OUT], cache_write_5m=row[_W5M],
                cache_write_1h=row[_W1H], cache_read=row[_READ],
                batch_discount=self._prices.batch_discount if batch else None)
            entry["cost"] += cost
            grand += cost
        for entry in per_model.values():
            entry["cost_usd"] = _money(entry.pop("cost"))
        return per_model, grand


def _money(value: Decimal) -> str:
    """A Decimal as a plain string (never ``1E-7``), exact."""
    return format(value, "f")
