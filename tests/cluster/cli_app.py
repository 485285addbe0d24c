"""The ``raytroupe`` app as the console script builds it: one place for the CLI tests to get it."""

from __future__ import annotations

from cluster.cli import build_app

app = build_app()

__all__ = ["app"]
