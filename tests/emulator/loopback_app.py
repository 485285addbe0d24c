"""An emulator app served on 127.0.0.1 inside the test's own event loop, its state in reach.

``run_emulator`` serves from a thread; tests that must swap in a fake clock (rate-limit
buckets, prompt-cache lifetimes) serve the same app here instead, still over real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp.test_utils import TestServer

from emulator import EmulatorConfig, build_app
from emulator.state import STATE, EmulatorState


@asynccontextmanager
async def served(config: EmulatorConfig) -> AsyncIterator[tuple[str, EmulatorState]]:
    """Serve ``config``'s app on a free loopback port; yield its base URL and its state."""
    app = build_app(config)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app[STATE]
    finally:
        await server.close()
