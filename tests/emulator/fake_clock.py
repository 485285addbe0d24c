"""A clock for the rate-limit book that moves only when a test says so."""

from __future__ import annotations

from datetime import UTC, datetime

WALL_START = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC).timestamp()


class FakeClock:
    """Monotonic and wall time, both starting at WALL_START's instant and moved by ``t``."""

    def __init__(self) -> None:
        self.t = 0.0

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL_START + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
