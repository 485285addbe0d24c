"""The offline default: the emulator served from a named Ray actor, one per cluster.

Why an actor and not a thread in the driver: two drivers on one cluster must hit the same
emulator (its rate limits and its bill are per key, like the real API's), and the server should
not share the driver's GIL. The actor runs the aiohttp app on its own event loop, on the head
node, bound to loopback.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import ray

from cluster.settings import Settings

if TYPE_CHECKING:  # imported where the server starts: drivers only look the actor up, and
    from aiohttp import web  # aiohttp (with its TLS context) is ~0.3 s of their start-up


class EmulatorServer:
    """Serves ``emulator.build_app`` on 127.0.0.1 inside a Ray actor."""

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._starting = asyncio.Lock()  # concurrent first callers must start one server

    async def base_url(self) -> str:
        """Start the server on first use and return its URL.

        Example:
            >>> url = ray.get(get_emulator(Settings()).base_url.remote())  # doctest: +SKIP
        """
        async with self._starting:
            if self._url is None:
                await self._start()
        assert self._url is not None
        return self._url

    async def _start(self) -> None:
        """Serve the app on a free loopback port."""
        from aiohttp import web

        from emulator import EmulatorConfig, build_app

        self._runner = web.AppRunner(build_app(EmulatorConfig(profile=self.profile)),
                                     access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self._url = f"http://127.0.0.1:{port}"


def get_emulator(settings: Settings, *, namespace: str, lifetime: str | None = None) -> Any:
    """Get or create the cluster's emulator actor, soft-pinned to the driver's node."""
    node = ray.get_runtime_context().get_node_id()
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node, soft=True)
    return ray.remote(EmulatorServer).options(
        name="emulator", namespace=namespace, get_if_exists=True, lifetime=lifetime,
        num_cpus=0, max_restarts=-1, max_concurrency=1000, scheduling_strategy=strategy,
    ).remote(settings.emulator_profile)
