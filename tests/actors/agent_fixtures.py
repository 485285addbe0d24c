"""Fixtures shared by the Agent tests: one runtime over one emulator for a module."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import ray

import cluster
from actors.agent import spawn_agent
from actors.messages import AgentSpec


@dataclass
class Rig:
    """A runtime wired to one emulator, and ways to make agents and read both bills."""

    runtime: cluster.Runtime
    emulator: Any

    def agent(self, tier: str = "haiku", tools: tuple[Any, ...] = (), *, emulator: Any = None,
              **spec: Any) -> tuple[Any, str]:
        """A fresh agent in a fresh run; returns (handle, run_id)."""
        run_id = spec.pop("run_id", None) or f"run-{uuid.uuid4().hex[:8]}"
        backend = self.runtime.backend
        if emulator is not None:
            backend = replace(backend, base_url=emulator.base_url)
        name = f"{run_id}/test/{spec.pop('role', 'worker')}"
        handle = spawn_agent(AgentSpec(name=name, tier=tier, run_id=run_id, **spec),  # type: ignore[arg-type]
                             backend, tools)
        return handle, run_id

    def ledger_totals(self, run_id: str) -> Any:
        return ray.get(self.runtime.ledger.totals.remote(run_id))


def bill(stats: dict[str, Any]) -> tuple[dict[str, int], Decimal]:
    """Token totals and USD of the emulator's bill, summed over models."""
    fields = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")
    tokens = {f: sum(m[f] for m in stats["billed"].values()) for f in fields}
    return tokens, Decimal(stats["total_cost_usd"])


def ledger_tokens(totals: Any) -> dict[str, int]:
    fields = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")
    return {f: getattr(totals, f) for f in fields}
