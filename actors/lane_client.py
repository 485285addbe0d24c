"""The caller's end of a lane: asks to an Agent actor on this node over a unix socket.

One lane per (process, event loop, agent), made on the first ask (``Agent.open_lane`` over
Ray, then a connection whose first frame carries the lane's token: ``actors/lane_server.py``)
and kept while the actor lives. Each ask is one frame out and one back; asks and replies of one loop
turn share one write. No hold for company: a frame costs ~0.05 ms, not the ~1 ms of CPU a
Ray call costs, so batching would only add its wait (``docs/performance.md``, "A direct lane").

Faults keep Ray's path's semantics (``actors/agent_handle.py``, ``docs/reliability.md``): when
the connection drops (the actor died), every ask in flight on it fails with the error
``lost()`` makes (``AgentLost``, and the agent's probe starts, so later asks wait for the
restart); the next ask opens a new lane from the restarted actor. After a drop with no ask on
it, the next ask first asks whether the actor is up (``agent_handle.alive``): a death seen is
waited out, not met. Cancelling an ask stops its
call on the host (a ``CANCEL`` frame), as ``ray.cancel`` does. An actor that gives no lane (on
another node, an error while opening) is asked over Ray. A warm host's agent (``HostedAgent``)
has a lane of its own, keyed by host and agent name.

Example::

    lane = await lane_for(handle, lost)          # Lane | None (then: Ray's path)
    reply = await lane.ask(AskRequest(prompt="Hi"))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayTaskError

from actors import lane_wire
from actors.errors import RaytroupeError
from actors.messages import AskRequest, Reply

_log = logging.getLogger(__name__)

NO_LANE_RECHECK_S = 30.0
"""An actor that gave no lane (another node) is asked again after this: it may have moved."""
_CONNECT_TIMEOUT_S = 5.0
FORGET_ENDED_S = 120.0
"""A lane that ended this long ago is let go (``_forget_ended``): its agent was stopped (a
run's end) or restarted long since, so ``dropped`` has nothing left to tell the next ask."""
_clock = time.monotonic


class LaneRefused(ConnectionError):
    """The host refused the lane's first frame (a wrong or used token)."""


class Lane:
    """One connection to an actor's lane; ``ask`` from the loop that opened it.

    Args:
        reader, writer: The connection, after the host's ``WELCOME``.
        lost: Makes the error of an ask in flight when the connection drops (and starts the
            agent's probe): ``agent_handle.lost``.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 lost: Callable[[], BaseException]) -> None:
        self._writer, self._lost = writer, lost
        self._out = lane_wire.Outbox(writer)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._ending: set[int] = set()
        """Cancelled asks the host has not said ``ENDED`` for yet (``settled`` waits)."""
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False
        self.ended_at: float | None = None
        self.dropped = False
        """Closed by the host's end (its process died?), not by this caller."""
        self.asks = 0
        """Asks sent on this lane (tests, diagnosis)."""
        self._reading = asyncio.get_running_loop().create_task(self._read(reader))

    def __repr__(self) -> str:
        return f"Lane(pending={len(self._pending)}, closed={self.closed})"

    async def ask(self, request: AskRequest) -> Reply:
        """The host's reply to ``request``, or its error raised; ``lost()``'s error if the
        connection drops first. Cancelled, it stops the host's call."""
        if self.closed:
            raise ConnectionError("the lane is closed")  # not sent: the caller takes Ray's path
        ask_id = next(self._ids)
        # Built first: an ask that cannot be sent (a check that does not pickle) must not
        # stay pending, or ``settled`` (a run's flush) would wait its whole timeout for it.
        data = lane_wire.ask_frame(ask_id, request)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[ask_id] = future
        self._idle.clear()
        self._out.send(data)
        self.asks += 1
        try:
            return await future
        except asyncio.CancelledError:
            if self._pending.pop(ask_id, None) is not None and not self.closed:
                self._ending.add(ask_id)
                self._out.send(lane_wire.frame(lane_wire.CANCEL, ask_id))
            self._check_idle()
            raise

    async def settled(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until every ask sent has ended on the host, the
        cancelled ones too: then their attempts' records exist."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)

    def close(self) -> None:
        """Hang up (asks in flight are cancelled on the host)."""
        self._reading.cancel()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        dropped = True
        try:
            while True:
                kind, ask_id, payload = await lane_wire.read_frame(reader)
                self._ending.discard(ask_id)
                if kind in (lane_wire.REPLY, lane_wire.ERROR):
                    self._settle(ask_id, _read_reply(kind, payload))
                self._check_idle()
        except asyncio.CancelledError:
            dropped = False  # our own close (or our loop ending): not the actor's death
            raise
        except GeneratorExit:  # our loop was closed with this task pending, now collected:
            self.closed = True  # no loop left to close on or tell (the socket closes with it)
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:  # a frame we cannot read: a bug, so hang up and say so
            _log.exception("a lane frame could not be read; the lane is closed")
        finally:
            if not self.closed:
                self._hang_up(dropped)

    def _hang_up(self, dropped: bool) -> None:
        """The connection is over: fail what is pending (``lost()``'s error if it dropped)."""
        self.closed, self.ended_at = True, _clock()
        self._writer.close()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(self._lost() if dropped else ConnectionError(
                    "the lane was closed by its caller"))
        self.dropped = dropped
        self._ending.clear()
        self._idle.set()

    def _settle(self, ask_id: int, result: Reply | BaseException) -> None:
        future = self._pending.pop(ask_id, None)
        if future is None or future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def _check_idle(self) -> None:
        if not self._pending and not self._ending:
            self._idle.set()


def _read_reply(kind: int, payload: bytes) -> Reply | BaseException:
    """A reply or error frame; one that does not read fails its own ask, not the lane."""
    try:
        return lane_wire.read_reply(kind, payload)
    except Exception as exc:
        return RaytroupeError(f"the agent's answer could not be read ({type(exc).__name__}: "
                              f"{exc})")


class _Opening:
    """The lane of one actor in this process: being opened, open, or none (and since when)."""

    __slots__ = ("checked", "lane", "loop", "task")

    def __init__(self, task: asyncio.Task[Lane | None]) -> None:
        self.task, self.loop, self.checked = task, task.get_loop(), _clock()
        self.lane: Lane | None = None
        """The lane once open: the path of every ask after the first, a lookup."""
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[Lane | None]) -> None:
        self.checked = _clock()
        if not task.cancelled() and task.exception() is None:
            self.lane = task.result()


_LANES: dict[tuple[str, int], _Opening] = {}
"""Lanes by (agent's key, ``id`` of the loop that opened them): a lane serves one loop, and
two loops asking in turn (threads of a server) must each keep theirs, not replace the other's
(which would open a lane per turn and leave the replaced ones connected)."""


async def lane_for(handle: Any, lost: Callable[[], BaseException]) -> Lane | None:
    """The open lane to the actor ``handle``, opened now if needed; None: use Ray's path.

    Agent actors and warm hosts' agents (``HostedAgent``, keyed by host and agent) have lanes.
    """
    key, loop = _key(handle), asyncio.get_running_loop()
    if key is None:
        return None
    entry = _LANES.get(key)
    if entry is not None and entry.lane is not None and not entry.lane.closed and \
            entry.loop is loop:
        return entry.lane
    if entry is None or entry.loop is not loop or _stale(entry):
        _forget_ended()
        entry = _LANES[key] = _Opening(loop.create_task(_open(handle, lost)))
    try:
        return await asyncio.shield(entry.task)
    except Exception:  # the actor is down or failed: this ask takes Ray's path (its error)
        return None


def _forget_ended() -> None:
    """Drop the lanes of loops that have closed (an ``asyncio.run`` per request; a new loop
    may reuse a closed one's ``id``) and those that ended ``FORGET_ENDED_S`` ago: a long-lived
    driver running run after run of new agents would keep one per agent it ever asked.
    Called as a lane is opened, so it costs the asks nothing."""
    now = _clock()
    for key, entry in list(_LANES.items()):
        ended_at = entry.lane.ended_at if entry.lane is not None else None
        if entry.loop.is_closed() or (ended_at is not None and now - ended_at > FORGET_ENDED_S):
            _LANES.pop(key, None)


def _stale(entry: _Opening) -> bool:
    """Whether this actor's lane must be opened again: it closed (the actor died), opening
    it failed as the actor died, or a while ago the actor gave none (it may have moved to this
    node) or failed to open one (its socket directory, its file descriptors: asked again at
    every ask, it would cost each ask a failing Ray call first)."""
    task = entry.task
    if not task.done():
        return False
    if task.cancelled():
        return True
    failed = task.exception()
    if isinstance(failed, RayTaskError) or (failed is None and task.result() is None):
        return _clock() - entry.checked > NO_LANE_RECHECK_S
    return failed is not None or task.result().closed


async def _open(handle: Any, lost: Callable[[], BaseException]) -> Lane | None:
    """Ask the actor for a lane over Ray and connect to it."""
    address: lane_wire.LaneAddress | None = await handle.open_lane.remote(
        ray.get_runtime_context().get_node_id())
    if address is None:
        return None
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(address.path)
            writer.write(lane_wire.frame(lane_wire.HELLO, 0, bytes.fromhex(
                address.token.get_secret_value())))
            kind, _, _ = await lane_wire.read_frame(reader)
    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
        _log.info("a lane to %s could not connect (%s); using Ray's path", address.path, exc)
        return None
    if kind != lane_wire.WELCOME:
        writer.close()
        raise LaneRefused(f"the lane at {address.path} refused its token")
    return Lane(reader, writer, lost)


def dropped(handle: Any) -> bool:
    """Whether this loop's lane to ``handle`` was hung up by the host's end: its process may
    have died since, so ask whether it is up (``agent_handle.alive``) before a new lane."""
    key = _key(handle)
    entry = _LANES.get(key) if key is not None else None
    return entry is not None and entry.lane is not None and entry.lane.dropped and \
        entry.loop is asyncio.get_running_loop()


async def settled(handle: Any, timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until every ask sent on this loop's lane to ``handle``
    has ended on the host, the cancelled ones too."""
    key = _key(handle)
    entry = _LANES.get(key) if key is not None else None
    if entry is not None and entry.lane is not None and \
            entry.loop is asyncio.get_running_loop():
        await entry.lane.settled(timeout_s)


def _key(handle: Any) -> tuple[str, int] | None:
    """The lane's key on the running loop: an Agent actor's id or a hosted agent's
    ``lane_key``, and the loop's ``id``; None: no lane."""
    agent = handle._actor_id.hex() if isinstance(handle, ray.actor.ActorHandle) else \
        getattr(handle, "lane_key", None)
    return None if agent is None else (agent, id(asyncio.get_running_loop()))
