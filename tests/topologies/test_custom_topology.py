"""The hand-wired example in ``examples/custom_topology.py`` runs as documented."""

from __future__ import annotations

import importlib.util
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.topologies.rig import Asked, TopologyRig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_topology.py"


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("custom_topology", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the example's annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_the_tagline_contest_fans_out_to_writers_and_the_editor_picks(
        rig: TopologyRig) -> None:
    def answer(asked: Asked) -> str:
        if asked.system.startswith("You are an editor"):
            return re.findall(r"\d\. (.+)", asked.user)[-1]
        return f"Fresh bread, {asked.model} style"

    with rig.script(answer) as script:
        contest = await _load().tagline_contest(rig.runtime, "a bakery")

    writers, editor = script.asked[:3], script.asked[3]
    assert [w.tier for w in writers] == ["haiku"] * 3 and editor.tier == "sonnet"
    assert all(w.user == "Write a tagline for a bakery." for w in writers)
    assert editor.user.count("Fresh bread") == 3
    assert contest.winner == contest.drafts[-1]
    assert set(contest.ledger) == {"writer-1", "writer-2", "writer-3", "editor"}
    assert contest.cost_usd == Decimal(rig.emulator.stats()["total_cost_usd"])
