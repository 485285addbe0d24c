"""Fixtures of the actors tests: ``rig``, one runtime over one emulator per module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import cluster
from cluster.settings import Settings
from tests.actors.agent_fixtures import Rig


@pytest.fixture(scope="module")
def rig(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    from emulator import run_emulator

    with run_emulator() as emu:
        settings = Settings(anthropic_base_url=emu.base_url,
                            data_dir=tmp_path_factory.mktemp("ledger"), _env_file=None)
        runtime = cluster.init(settings=settings, namespace=f"t-{uuid.uuid4().hex[:6]}")
        yield Rig(runtime, emu)
