"""Running the emulator: in a background thread, in a subprocess, or in the foreground.

* :func:`run_emulator` (tests, the demo): a context manager that serves the app from a thread
  with its own event loop on a free loopback port, waits until it answers, and yields an
  :class:`EmulatorHandle`.
* :class:`EmulatorProcess` (benchmarks, the runtime's offline default): the same behind
  ``python -m emulator``, so the emulator does not share the driver's GIL.
* :func:`serve` (``raytroupe emulator``, ``python -m emulator``): serve until SIGINT/SIGTERM,
  after printing ``raytroupe emulator listening on http://HOST:PORT``.

Example:
    >>> with run_emulator(latency_s=0) as emu:  # doctest: +SKIP
    ...     client = Anthropic(base_url=emu.base_url, api_key=emu.api_key)
    ...     client.messages.create(model="claude-haiku-5-5", max_tokens=64,
    ...                            messages=[{"role": "user", "content": "Hi"}])
    ...     emu.stats()["billed"]
"""

from __future__ import annotations

import asyncio
import json
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web

from emulator.app import build_app
from emulator.config import DEFAULT_API_KEY, EmulatorConfig
from emulator.control_routes import full_stats
from emulator.responders import Responder
from emulator.state import STATE

__all__ = ["LISTENING", "EmulatorHandle", "EmulatorProcess", "run_emulator", "serve"]

LISTENING = "raytroupe emulator listening on "
"""The start of the one line a served emulator prints when it is ready."""

_START_TIMEOUT_S = 30.0
_SHUTDOWN_TIMEOUT_S = 1.0
"""How long stopping waits for in-flight replies (a realistic stream may run for seconds)."""

T = TypeVar("T")


def _configure(config: EmulatorConfig | None, overrides: dict[str, Any]) -> EmulatorConfig:
    """``config`` (or the defaults) with ``overrides`` applied and validated."""
    base = (config or EmulatorConfig()).model_dump()
    return EmulatorConfig.model_validate({**base, **overrides})


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class EmulatorHandle:
    """A running in-process emulator: its URL, a dummy key, and its bill.

    Methods run on the emulator's own loop (from any thread), so they are safe while requests
    are in flight.
    """

    api_key: str = DEFAULT_API_KEY
    """A dummy key to give clients (any non-empty key works unless ``api_keys`` is set)."""

    def __init__(self, base_url: str, app: web.Application,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.base_url = base_url
        """``http://127.0.0.1:PORT``: pass it as the SDK's ``base_url``."""
        self._app = app
        self._loop = loop

    def __repr__(self) -> str:
        return f"EmulatorHandle({self.base_url!r})"

    @property
    def config(self) -> EmulatorConfig:
        """The emulator's configuration."""
        return self._app[STATE].config

    def stats(self) -> dict[str, Any]:
        """The bill and counters, as ``GET /_emulator/stats`` returns them."""
        return self._on_loop(lambda: full_stats(self._app))

    def reset(self) -> None:
        """Clear the bill, counters, prompt cache, rate-limit buckets and received log."""
        self._on_loop(self._app[STATE].reset)

    def set_responder(self, responder: Responder | None) -> None:
        """Answer every later request with ``responder`` (None restores the default)."""
        self._on_loop(lambda: self._app[STATE].responders.set(responder))

    @property
    def received(self) -> list[dict[str, Any]]:
        """The latest ``POST /v1/messages`` bodies, oldest first."""
        return self._on_loop(lambda: list(self._app[STATE].received))

    def _on_loop(self, fn: Callable[[], T]) -> T:
        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)


class _ThreadServer:
    """The app served from a daemon thread running its own event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._app = build_app(config)
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False,
                                     shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="raytroupe-emulator",
                                        daemon=True)
        self.base_url = ""

    def start(self) -> EmulatorHandle:
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise RuntimeError("the emulator did not start within "
                               f"{_START_TIMEOUT_S:.0f} s")
        if self._error is not None:
            self._thread.join()
            raise RuntimeError(f"the emulator failed to start: {self._error}") from self._error
        _wait_until_answering(self.base_url)
        return EmulatorHandle(self.base_url, self._app, self._loop)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_SHUTDOWN_TIMEOUT_S + 10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start(), which raises it in the caller
            self._error = exc
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

    async def _start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._config.host, self._config.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = _url(host, port)


@contextmanager
def run_emulator(config: EmulatorConfig | None = None,
                 **overrides: Any) -> Iterator[EmulatorHandle]:
    """Serve an emulator from a background thread for the duration of a ``with`` block.

    Args:
        config: The configuration (defaults: loopback, a free port, the ``fast`` profile,
            no limits, no faults).
        **overrides: Fields of :class:`EmulatorConfig` to change (``latency_s=0.2``, ...).

    Yields:
        The running emulator's handle.
    """
    server = _ThreadServer(_configure(config, overrides))
    handle = server.start()
    try:
        yield handle
    finally:
        server.stop()


class EmulatorProcess:
    """An emulator in a subprocess (``python -m emulator``), used as a context manager.

    Args:
        config: The configuration.
        **overrides: Fields of :class:`EmulatorConfig` to change.

    Example:
        >>> with EmulatorProcess(latency_s=0) as emu:  # doctest: +SKIP
        ...     print(emu.base_url, emu.stats()["requests"])
    """

    api_key: str = DEFAULT_API_KEY
    """A dummy key to give clients."""

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self.config = _configure(config, overrides)
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> EmulatorProcess:
        """Start the subprocess and wait for its "listening" line."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "emulator", "--config-json", self.config.model_dump_json()],
            stdout=subprocess.PIPE, text=True)
        line = _read_line(self._proc, _START_TIMEOUT_S)
        if not line.startswith(LISTENING):
            self.stop()
            raise RuntimeError(f"the emulator subprocess did not start (said {line!r})")
        self.base_url = line[len(LISTENING):].strip()
        return self

    def stop(self) -> None:
        """Stop the subprocess (SIGTERM, then SIGKILL if it does not exit)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stats(self) -> dict[str, Any]:
        """The bill and counters, from ``GET /_emulator/stats``."""
        return _http_json(f"{self.base_url}/_emulator/stats")

    def reset(self) -> None:
        """Clear the bill, counters, prompt cache, buckets and received log."""
        _http_json(f"{self.base_url}/_emulator/reset", method="POST")

    @property
    def received(self) -> list[dict[str, Any]]:
        """The latest ``POST /v1/messages`` bodies, oldest first."""
        return _http_json(f"{self.base_url}/_emulator/received")

    def set_responder(self, responder: Responder | None) -> None:
        """Not possible: a Python function cannot be handed to another process."""
        raise TypeError("responders are Python functions and cannot cross into a subprocess; "
                        "use run_emulator() for scripted replies")


def serve(config: EmulatorConfig, *, announce: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; announce the URL when ready."""
    asyncio.run(_serve(config, announce or (lambda line: print(line, flush=True))))


async def _serve(config: EmulatorConfig, announce: Callable[[str], None]) -> None:
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False,
                           shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port).start()
        host, port = runner.addresses[0][:2]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        announce(LISTENING + _url(host, port))
        await stop.wait()
    finally:
        await runner.cleanup()


def _wait_until_answering(base_url: str) -> None:
    """Poll the health route (bounded) so callers never race the server's first request."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            _http_json(f"{base_url}/_emulator/health", timeout=2.0)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # the caller's thread, not the server's loop


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's first stdout line, or "" if it exits or stays silent for ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return proc.stdout.readline()


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""An opener that ignores proxy variables: the emulator is on loopback, never behind a proxy."""


def _http_json(url: str, *, method: str = "GET", timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with _DIRECT.open(request, timeout=timeout) as response:
        return json.loads(response.read())
