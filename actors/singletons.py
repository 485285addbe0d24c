"""The cluster's singletons by name: looked up once per process, looked up again after one dies.

Agents and drivers do not hold the RateLimiter's or the Ledger's handle from the moment they
were made: they hold a :class:`Singleton`, a name in a namespace. A handle is found with
``ray.get_actor`` on first use and cached for the whole process. When Ray says the actor is dead
for good (``ActorDiedError``: killed without restart, or its owner gone), the handle is dropped
and the name looked up again until a new actor answers under it (``get_if_exists`` in any
driver, or ``raytroupe up``, creates it again), for a bounded time; then one
:class:`~actors.errors.SingletonLost` says which singleton is gone and how to bring it back.
A restart by Ray (``max_restarts=-1``) keeps the handle valid: calls fail while it restarts
(``ActorUnavailableError``) and the callers' own retries go on.

Example:
    >>> ledger = Singleton("ledger", "raytroupe")
    >>> handle = await ledger.ahandle()                      # doctest: +SKIP
    >>> handle = await ledger.find_again(handle)             # after ActorDiedError
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ray

from actors.errors import SingletonLost

DEFAULT_GIVE_UP_S = 60.0
"""How long a dead singleton's name is looked up again before callers get ``SingletonLost``."""

_handles: dict[tuple[str, str], Any] = {}
"""Handles found in this process, by (namespace, name): one lookup per process, not per call."""


class Singleton:
    """A named actor, found by name when first used and found again after it died.

    Args:
        name: The actor's name (``rate_limiter``, ``ledger``, ``emulator``).
        namespace: Its Ray namespace.
        give_up_after_s: How long to look for a new actor under the name after one died.
        handle: A handle already held (the creator's), used until it dies.
    """

    def __init__(self, name: str | None, namespace: str | None, *,
                 give_up_after_s: float = DEFAULT_GIVE_UP_S, handle: Any = None) -> None:
        self.name, self.namespace = name, namespace
        self.give_up_after_s = give_up_after_s
        self._handle = handle

    def __repr__(self) -> str:
        return f"Singleton({self.namespace}/{self.name})"

    def found_at(self, name: str | None, namespace: str | None) -> None:
        """Learn the name of a singleton that was given as a bare handle."""
        if name is not None and self.name is None:
            self.name, self.namespace = name, namespace

    async def ahandle(self) -> Any:
        """The live handle, looked up off the event loop the first time."""
        if self._handle is None:
            name = self._require_name()
            self._handle = await asyncio.to_thread(lookup, name, self.namespace or "")
        return self._handle

    async def find_again(self, dead: Any = None) -> Any:
        """Drop the dead handle and wait (bounded) for an actor under the name to answer.

        Raises:
            SingletonLost: nothing answered under the name within ``give_up_after_s``.
        """
        name = self._require_name()  # before dropping it: an unnamed handle is all we have
        dead_id = getattr(dead, "_actor_id", None)
        forget(name, self.namespace or "", dead)
        self._handle = None
        deadline = time.monotonic() + self.give_up_after_s
        delay = 0.1
        while time.monotonic() < deadline:
            try:
                handle = await asyncio.to_thread(lookup, name, self.namespace or "")
            except SingletonLost:
                handle = None
            if handle is not None and handle._actor_id != dead_id:
                self._handle = handle
                return handle
            if handle is not None:
                forget(name, self.namespace or "", handle)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise SingletonLost(name, self.namespace or "", self.give_up_after_s)

    def _require_name(self) -> str:
        if self.name is None:  # a bare handle whose name we never learnt: nothing to look up
            raise SingletonLost("(an unnamed actor)", self.namespace or "", 0.0)
        return self.name


def lookup(name: str, namespace: str) -> Any:
    """The process's handle of the named actor (cached); ``SingletonLost`` if there is none."""
    key = (namespace, name)
    handle = _handles.get(key)
    if handle is None:
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            raise SingletonLost(name, namespace, 0.0) from None
        _handles[key] = handle
    return handle


def remember(name: str, namespace: str, handle: Any) -> None:
    """Cache a handle this process already holds (its creator's), so lookups skip the GCS."""
    _handles[(namespace, name)] = handle


def forget(name: str, namespace: str, dead: Any = None) -> None:
    """Drop the cached handle (only if it is ``dead``'s, when given)."""
    key = (namespace, name)
    held = _handles.get(key)
    if held is not None and (dead is None or held._actor_id == dead._actor_id):
        del _handles[key]

