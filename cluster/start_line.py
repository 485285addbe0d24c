"""A start line for load: drivers in several processes wait until all are ready, then go.

Load tests and benchmarks that measure a shared limit need every driver saturating it at once;
a driver that starts late lets the bucket refill idle and the run measures start-up skew.

Example:
    >>> line = ray.remote(StartLine).options(name="start-line").remote(2)  # doctest: +SKIP
    >>> ray.get(ray.get_actor("start-line").arrive_and_wait.remote())      # in each driver
"""

from __future__ import annotations

import asyncio


class StartLine:
    """Holds every arriving driver until ``drivers`` have arrived (make it an async actor)."""

    def __init__(self, drivers: int) -> None:
        self.expected, self.ready = drivers, 0
        self.go = asyncio.Event()

    async def arrive_and_wait(self) -> None:
        """Count this driver in and return once all have arrived."""
        self.ready += 1
        if self.ready >= self.expected:
            self.go.set()
        await self.go.wait()
