"""Fixtures of the topology tests: one runtime over one emulator per module, and a recorder.

Every architecture test scripts the emulator with a responder that answers by role (read from
the system prompt) and records who asked what, on which model, in arrival order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import cluster
from cluster.settings import Settings
from tests.topologies.rig import TopologyRig


@pytest.fixture(scope="module")
def rig(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TopologyRig]:
    from emulator import run_emulator

    with run_emulator() as emu:
        settings = Settings(anthropic_base_url=emu.base_url,
                            data_dir=tmp_path_factory.mktemp("ledger"), _env_file=None)
        runtime = cluster.init(settings=settings, namespace=f"t-{uuid.uuid4().hex[:6]}")
        yield TopologyRig(runtime, emu)
        emu.set_responder(None)
