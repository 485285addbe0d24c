"""Fixtures of the fault drills: one runtime over one emulator per module, and the bill check.

Each drill module may set ``EMULATOR = EmulatorConfig(...)`` (faults, latency, limits) for its
emulator; the default is the fast profile with no faults. The Ray session is the suite's
``ray_session``; every module gets its own namespace, so its Ledger and limiter are its own.
Drills already in the suite stay where they are (listed in ``__init__.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ray

import cluster
from cluster.settings import Settings
from tests.drills.bill import ledger_minus_bill


@dataclass
class Drill:
    """A runtime wired to one emulator (``emulator.stats()`` is the bill)."""

    runtime: cluster.Runtime
    emulator: Any

    def totals(self, run_id: str) -> Any:
        """The Ledger's totals of one run (flush its agents first)."""
        return ray.get(self.runtime.ledger.totals.remote(run_id))

    def assert_ledger_is_bill(self, *run_ids: str) -> None:
        """Ledger == bill, tokens and USD, over the runs since the emulator's last reset."""
        tokens, usd = ledger_minus_bill([self.totals(r) for r in run_ids], self.emulator.stats())
        assert (tokens, usd) == (dict.fromkeys(tokens, 0), 0), \
            f"Ledger minus bill: {tokens}, ${usd}"


@pytest.fixture(scope="module")
def drill(request: pytest.FixtureRequest, ray_session: None,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    from emulator import EmulatorConfig, run_emulator

    with run_emulator(getattr(request.module, "EMULATOR", EmulatorConfig())) as emu:
        settings = Settings(anthropic_base_url=emu.base_url,
                            data_dir=tmp_path_factory.mktemp("drill"), _env_file=None)
        runtime = cluster.init(settings=settings, namespace=f"drill-{uuid.uuid4().hex[:6]}")
        yield Drill(runtime, emu)
        emu.set_responder(None)
