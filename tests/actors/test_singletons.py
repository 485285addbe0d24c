"""A singleton killed for good is found again under its name, or one clear error is raised."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import ray
from ray.exceptions import ActorDiedError

from actors.errors import SingletonLost
from actors.singletons import Singleton


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def bump(self) -> int:
        self.calls += 1
        return self.calls


def _make(name: str, namespace: str) -> Any:
    return ray.remote(Counter).options(name=name, namespace=namespace, get_if_exists=True,
                                       lifetime="detached", num_cpus=0).remote()


def _recreate(name: str, namespace: str) -> None:
    """Another driver creates the singleton again once Ray has released the dead one's name."""
    while True:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            _make(name, namespace)
            return
        time.sleep(0.1)


def test_a_replaced_singleton_is_found_again_by_name(ray_session: None) -> None:
    namespace = f"sg-{uuid.uuid4().hex[:6]}"
    first = _make("counter", namespace)
    singleton = Singleton("counter", namespace, give_up_after_s=30)

    async def scenario() -> int:
        handle = await singleton.ahandle()
        assert await handle.bump.remote() == 1
        ray.kill(first, no_restart=True)  # takes effect a moment later
        with pytest.raises(ActorDiedError):
            for _ in range(300):
                await handle.bump.remote()
                await asyncio.sleep(0.1)
        recreate = asyncio.create_task(asyncio.to_thread(_recreate, "counter", namespace))
        fresh = await singleton.find_again(handle)
        await recreate
        return await fresh.bump.remote()

    try:
        assert asyncio.run(scenario()) == 1  # a new actor, not the dead one
    finally:
        try:
            ray.kill(ray.get_actor("counter", namespace=namespace), no_restart=True)
        except ValueError:
            pass  # the scenario failed before making a new one


def test_a_singleton_gone_for_good_is_one_clear_error(ray_session: None) -> None:
    namespace = f"sg-{uuid.uuid4().hex[:6]}"
    handle = _make("counter", namespace)
    ray.get(handle.bump.remote())
    ray.kill(handle, no_restart=True)
    singleton = Singleton("counter", namespace, give_up_after_s=1.5)
    with pytest.raises(SingletonLost, match=f"'counter' actor \\(namespace '{namespace}'\\) is "
                       "gone and none answered under its name within 2 s"):
        asyncio.run(singleton.find_again(handle))
