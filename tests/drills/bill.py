"""Ledger against bill: the one figure every drill checks (``docs/architecture.md``, the emulator's
bill is the ground truth).

Plain functions over a Ledger roll-up and the emulator's ``/_emulator/stats``, so the drills
here and ``benchmarks/drills.py`` compute it the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")


def bill_tokens(stats: Mapping[str, Any]) -> dict[str, int]:
    """Billed tokens of the emulator's bill by kind, summed over models."""
    return {f: sum(m[f] for m in stats["billed"].values()) for f in TOKEN_FIELDS}


def billed_requests(stats: Mapping[str, Any], model: str | None = None) -> int:
    """Billed requests of the emulator's bill (of one model, or all)."""
    return sum(m["requests"] for name, m in stats["billed"].items()
               if model is None or name == model)


def ledger_minus_bill(rollups: Iterable[Any], stats: Mapping[str, Any]
                      ) -> tuple[dict[str, int], Decimal]:
    """Ledger minus bill, per token kind and in USD (all zero when they agree).

    ``rollups``: the Ledger's ``totals`` of every run that spoke to this emulator since its
    last reset.
    """
    rollups = list(rollups)
    bill = bill_tokens(stats)
    tokens = {f: sum(getattr(r, f) for r in rollups) - bill[f] for f in TOKEN_FIELDS}
    usd = sum((r.cost_usd for r in rollups), Decimal(0)) - Decimal(stats["total_cost_usd"])
    return tokens, usd
