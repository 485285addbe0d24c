"""Calling an Agent actor from a caller's loop, so that an Agent's death is our error, not Ray's.

The one place where callers (sessions, topologies, the ask batcher) call an Agent's ``ask``
and ``stream``. When the Agent's process dies (``kill -9``, a crash), Ray fails the calls it
had with ``ActorDiedError`` / ``ActorUnavailableError`` ("may or may not have been executed");
Ray restarts the actor (``max_restarts``) but never re-sends them (``max_task_retries=0``):
a call may have reached the API, which takes no idempotency key. So here:

- a call in flight at the death fails with :class:`~actors.errors.AgentLost`, which says it
  may have been billed (the caller decides whether to pay again);
- a call made once the death is seen is not sent to a dead process: it waits for the restart
  (one probe per agent, bounded by ``RESTART_WAIT_S``), then goes; if the agent never comes
  back it fails with :class:`~actors.errors.AgentUnavailable` (never sent, so not billed).

The healthy path costs one dictionary lookup: no extra Ray round trip per call. An Agent actor
on this node is asked over its lane (``actors/lane_client.py``: no Ray call per ask, the same
errors); others over Ray.

Example::

    reply = await agent_handle.ask(handle, AskRequest(prompt="Hi"), name="r1/lead")
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from actors import lane_client
from actors.errors import AgentLost, AgentUnavailable, RaytroupeError
from actors.messages import AskRequest, Reply, StreamItem

RESTART_WAIT_S = 60.0
"""Longest a call waits for a dead agent to be restarted (``kill -9`` to usable: ~2 s)."""
_PROBE_EVERY_S = 0.1
_DEAD_AFTER_S = 3.0
"""How long Ray may keep calling a restarting agent dead before we believe it."""


_PROBES: dict[str, asyncio.Task[None]] = {}
"""Agents this process saw die, each with the one probe that waits for its restart; an agent
that is up has no entry, so the healthy path is one dictionary lookup."""


def _probe(handle: Any, name: str) -> asyncio.Task[None]:
    """The agent's probe, started if there is none running on this loop."""
    key, loop = handle._actor_id.hex(), asyncio.get_running_loop()
    probe = _PROBES.get(key)
    if probe is None or probe.done() or probe.get_loop() is not loop:
        probe = _PROBES[key] = loop.create_task(_until_back(handle, name))
        probe.add_done_callback(functools.partial(_back, key))
    return probe


def _back(key: str, probe: asyncio.Task[None]) -> None:
    """The probe ended: if the agent answered, calls go straight through again."""
    if _PROBES.get(key) is probe and not probe.cancelled() and probe.exception() is None:
        del _PROBES[key]


async def _until_back(handle: Any, name: str) -> None:
    """Probe the agent until it answers (restarted) or Ray says it is dead for good."""
    deadline = time.monotonic() + RESTART_WAIT_S
    died_since: float | None = None
    while True:
        try:
            await handle.__ray_ready__.remote()
            return
        except ActorDiedError as exc:
            # Dead for good once Ray says it will not restart it, or keeps saying it is dead.
            died_since = died_since or time.monotonic()
            if not _restarting(exc) or time.monotonic() - died_since > _DEAD_AFTER_S:
                raise AgentUnavailable(f"agent {name} is dead for good (its restarts are used "
                                       "up): this call was not sent, so not billed") from None
        except RayActorError:
            died_since = None  # unreachable for now: still restarting
        if time.monotonic() > deadline:
            raise AgentUnavailable(f"agent {name} did not come back within "
                                   f"{RESTART_WAIT_S:g} s: this call was not sent, so not "
                                   "billed; send it again later")
        await asyncio.sleep(_PROBE_EVERY_S)


def _restarting(exc: ActorDiedError) -> bool:
    """Whether Ray will bring the actor back (it says so in the error's context)."""
    return "restart" in str(exc).lower() and "will not be restarted" not in str(exc).lower()


async def ready(handle: Any, name: str = "") -> None:
    """Wait while the agent is known to be down (at once when it is up).

    Raises:
        AgentUnavailable: it did not come back in time, or it is dead for good.
    """
    probe = _PROBES.get(handle._actor_id.hex())
    if probe is None:  # up, as far as this process knows
        return
    if probe.done() or probe.get_loop() is not asyncio.get_running_loop():
        probe = _probe(handle, name or "(unnamed)")  # an old verdict: look again
    await asyncio.shield(probe)


async def alive(handle: Any, name: str = "") -> None:
    """Ask the agent whether it is up (one round trip) and wait for its restart if it is not.

    Before a call that must not be lost to a death nobody has seen yet: a run's final call
    after a long phase in which the agent's node may have gone (its process restarts
    elsewhere). Sent to the dead process, the call would fail as ``AgentLost``, maybe billed;
    after this, it goes to the restarted one.

    Raises:
        AgentUnavailable: it did not come back in time, or it is dead for good.
    """
    try:
        await handle.__ray_ready__.remote()
    except RayActorError:
        _probe(handle, name or "(unnamed)")
    await ready(handle, name)


def translated(handle: Any, exc: BaseException, name: str = "") -> BaseException:
    """What a caller gets for ``exc``, raised by a call to the agent: our own error out of
    Ray's ``RayTaskError`` wrapper, or, for the agent's death, ``AgentLost``."""
    # An actor error raised inside the agent (its Ledger died...) arrives as a RayTaskError
    # that is also a RayActorError: only a bare one is the agent's own death.
    if isinstance(exc, RayActorError) and not isinstance(exc, RayTaskError):
        return lost(handle, name)
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RaytroupeError) else exc


def lost(handle: Any, name: str = "") -> AgentLost:
    """The error of a call in flight when the agent died (over Ray or its lane); starts the
    agent's probe, so that later calls wait for its restart (none if its handle is gone)."""
    name = name or "(unnamed)"
    if handle is not None:
        _probe(handle, name)
    return AgentLost(f"agent {name} died while this call was in flight: it may have been "
                     "billed (it may have reached the API, which takes no idempotency key, "
                     "so it was not re-sent); the agent restarts and takes later calls")


def _lost_later(handle: Any, name: str) -> Callable[[], AgentLost]:
    """``lost`` for a lane to call when it drops, holding the handle weakly: a lane lives in
    ``lane_client`` as long as its process, and Ray stops an actor only once nobody holds a
    handle to it (a user's own ``spawn_agent`` then ``del``). A warm host's agent (a
    ``HostedAgent``, which may be made per call) is held as before: its host outlives runs."""
    if not isinstance(handle, ray.actor.ActorHandle):
        return functools.partial(lost, handle, name)
    weak = weakref.ref(handle)
    return lambda: lost(weak(), name)


async def lane_ask(handle: Any, request: AskRequest, name: str = "") -> Reply | None:
    """``request`` over the agent's lane (``actors/lane_client.py``: no Ray call per ask);
    None if it has none (another node): then the caller takes Ray's path.

    Call it after :func:`ready`. Raises the agent's own error for this request, or
    ``AgentLost`` if the agent died with it in flight.
    """
    for _ in range(2):  # a lane found closed before this ask went out: open the next one
        if lane_client.dropped(handle):  # its host hung up: up, or restarting?
            await alive(handle, name)
        lane = await lane_client.lane_for(handle, _lost_later(handle, name))
        if lane is None:
            return None
        if not lane.closed:
            return await lane.ask(request)
        await ready(handle, name)
    return None


async def ask(handle: Any, request: AskRequest, name: str = "") -> Reply:
    """``handle.ask(request)``, with an agent's death as ``AgentLost`` / ``AgentUnavailable``.

    Raises:
        RaytroupeError: the agent's own error for this request, unwrapped from Ray's.
    """
    name = name or request.role or ""
    await ready(handle, name)
    reply = await lane_ask(handle, request, name)
    if reply is not None:
        return reply
    ref = handle.ask.remote(request)
    try:
        return await ref
    except asyncio.CancelledError:
        ray.cancel(ref)
        raise
    except Exception as exc:
        raise translated(handle, exc, name) from None


async def stream(handle: Any, request: AskRequest, name: str = ""
                 ) -> AsyncIterator[StreamItem]:
    """``handle.stream(request)``'s items, awaited; cancelled if the caller stops early."""
    name = name or request.role or ""
    await ready(handle, name)
    generator = handle.stream.remote(request)
    finished = False
    try:
        async for ref in generator:
            yield await ref
        finished = True
    except Exception as exc:
        raise translated(handle, exc, name) from None
    finally:
        if not finished:  # a dropped generator keeps the model (and its bill) running
            ray.cancel(generator)
