"""The offline emulator of a private Ray: served from a thread of the driver that started it.

Why not the emulator actor (``cluster/emulator_actor.py``) there: that actor exists so that
every driver on a cluster hits one emulator (its limits and its bill are per key, like the
API's), and a private Ray has one driver. As an actor it needs a worker process (Python, Ray,
aiohttp: ~1 CPU-second on 2 cores) that starts only once Ray is up, while the run's own first
processes start; and the driver waits for it before its first agent is spawned: ~1 s of an
offline run's start-up (``docs/performance.md``, "Start-up"). Here it starts in a thread before
``ray.init``, its imports done while Ray starts, and it goes with the driver's process.

What it shares with the driver: the GIL. A driver mostly waits on its agents; the emulator
answers in a few hundred microseconds of Python per request.

Example:
    >>> emulator = PrivateEmulator("fast")          # doctest: +SKIP
    >>> url = emulator.base_url()                   # doctest: +SKIP
    >>> emulator.stop()                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading


class PrivateEmulator:
    """Starts the emulator (profile ``profile``) on a loopback port in a background thread."""

    def __init__(self, profile: str) -> None:
        self._stack = contextlib.ExitStack()
        self._url: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._start, args=(profile,), daemon=True,
                                        name="raytroupe-private-emulator")
        self._thread.start()

    def _start(self, profile: str) -> None:
        try:
            from emulator import EmulatorConfig, run_emulator

            self._url = self._stack.enter_context(
                run_emulator(EmulatorConfig(profile=profile))).base_url
        except BaseException as exc:  # raised in the caller of base_url()
            self._error = exc

    def base_url(self) -> str:
        """The URL once it answers (waits for the start); its start's error if it failed."""
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"the offline emulator did not start: {self._error}") \
                from self._error
        assert self._url is not None
        return self._url

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._thread.join()
        self._stack.close()
