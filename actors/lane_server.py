"""The host's end of a lane: asks from a caller on the same node, without a Ray call each.

Why: a Ray actor call costs ~1 ms of CPU on this box and its round trip after 200 ms of
idleness 2.2-2.3 ms, whatever it carries; an asyncio round trip over a unix socket between two
processes 0.06 ms back to back, 0.31 ms after idleness (``docs/performance.md``, "A direct
lane"). So a caller asks the actor once, over Ray, for a lane (``Agent.open_lane``), then sends
its asks over a socket served on the actor's own event loop, each answered by the same
``Agent._ask_or_error`` that ``ask_batch`` runs, and gets each reply or error as it finishes.
No library fits: Ray's Compiled Graphs run their stages on a background thread, not the actor's
loop (the agent's SDK client lives on it), cap the executions in flight (10 by default), may be
called only by the process that compiled them, and shut down for good when an actor dies.

Security: one listener per lane, a unix socket in a 0700 directory of this user, and a random
token (``secrets``, 32 bytes) that the caller got over Ray; the caller's first frame must carry
it (``hmac.compare_digest``) or it is refused. The first caller with the token takes the lane:
the listener then closes and its file is removed, so nothing listens once lanes are connected
(and a listener nobody takes closes after ``OPEN_WINDOW_S``). Files left by a ``kill -9``
within that window are removed by the actor's next incarnation. Another node's caller gets no
lane (None): it keeps Ray's path.

Example::

    server = LaneServer(agent._ask_or_error, "r1/mapper")    # in the actor, once
    address = await server.open(caller_node)                  # LaneAddress | None
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import ray
from pydantic import SecretStr

from actors import lane_wire
from actors.errors import RaytroupeError
from actors.lane_wire import LaneAddress
from actors.messages import AskRequest, Reply
from actors.record_journal import session_dir

_log = logging.getLogger(__name__)

OPEN_WINDOW_S = 10.0
"""Longest a lane's listener waits for its caller (who got its address over Ray just now)."""
_HELLO_TIMEOUT_S = 5.0
_MAX_SOCKET_PATH = 103
"""A unix socket's path must fit ``sun_path`` (108 bytes on Linux, 104 on macOS, with its
final NUL)."""
_NAME_LENGTH = 35
"""``/<actor id, 16>-<12 hex>.sock``."""

Answer = Callable[[AskRequest], Awaitable[Reply | RaytroupeError]]


class LaneServer:
    """An actor's lanes: a listener per lane opened, and the connections they made.

    Args:
        answer: Runs one ask on the actor's loop (``Agent._ask_or_error``).
        label: Names the actor in logs.
    """

    def __init__(self, answer: Answer, label: str) -> None:
        self._answer, self._label = answer, label
        self._listeners: dict[Path, asyncio.AbstractServer] = {}
        self._connections: dict[asyncio.Task[None], str] = {}
        """Each connected lane's serving task, and the tag it was opened with."""
        self._directory: Path | None = None
        self.asks = 0
        """Asks served over lanes (tests, diagnosis)."""

    def __repr__(self) -> str:
        return (f"LaneServer({self._label!r}, listening={len(self._listeners)}, "
                f"connected={len(self._connections)})")

    async def open(self, caller_node: str, answer: Answer | None = None, tag: str = ""
                   ) -> LaneAddress | None:
        """A new lane for a caller on ``caller_node``; None if that is another node.
        ``answer`` runs its asks instead of the server's (a warm host's agent of one spec);
        ``tag`` names the lane for ``hang_up`` (that agent's name)."""
        node = ray.get_runtime_context().get_node_id()
        if caller_node != node:
            return None
        directory = self._lane_dir()
        path = directory / f"{_actor_prefix()}-{secrets.token_hex(6)}.sock"
        token = secrets.token_bytes(32)

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._greet(path, token, answer or self._answer, reader, writer, tag)

        self._listeners[path] = await asyncio.start_unix_server(serve, path=str(path))
        asyncio.get_running_loop().call_later(OPEN_WINDOW_S, self._stop_listening, path)
        return LaneAddress(path=str(path), token=SecretStr(token.hex()), node_id=node)

    def close(self) -> None:
        """Stop every listener and remove its file (before the actor is killed). Connected
        lanes go on serving until the process ends: their callers' asks may be in flight."""
        for path in list(self._listeners):
            self._stop_listening(path)

    def hang_up(self, tag: str) -> None:
        """Close the lanes opened with ``tag`` (a warm host's agent whose run ended): their
        callers' next asks open new lanes; kept, each would hold a connection (two file
        descriptors) for as long as both processes live, one per agent per run."""
        for task, lane_tag in list(self._connections.items()):
            if lane_tag == tag:
                task.cancel()

    async def _greet(self, path: Path, token: bytes, answer: Answer,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     tag: str) -> None:
        """The first frame must carry the lane's token, and the lane must still be free."""
        try:
            async with asyncio.timeout(_HELLO_TIMEOUT_S):
                kind, _, payload = await lane_wire.read_frame(reader, len(token))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if kind != lane_wire.HELLO or not hmac.compare_digest(payload, token) or \
                path not in self._listeners:
            _log.warning("agent %s: a lane connection without its token was refused",
                         self._label)
            writer.write(lane_wire.frame(lane_wire.REFUSED))
            writer.close()
            return
        self._stop_listening(path)  # taken: nothing listens any more, the file is gone
        writer.write(lane_wire.frame(lane_wire.WELCOME))
        task = asyncio.current_task()  # asyncio serves each connection in a task of its own
        self._connections[task] = tag  # type: ignore[index]
        try:
            await _Connection(self, answer, reader, writer).serve()
        finally:
            self._connections.pop(task, None)  # type: ignore[call-overload]

    def _stop_listening(self, path: Path) -> None:
        listener = self._listeners.pop(path, None)
        if listener is not None:
            listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _lane_dir(self) -> Path:
        """This node's 0700 lane directory; made (and swept of this actor's stale sockets,
        left by a ``kill -9`` of an earlier incarnation) on first use."""
        if self._directory is None:
            directory = session_dir() / "lanes"
            if len(str(directory)) + _NAME_LENGTH > _MAX_SOCKET_PATH:  # a long session path
                directory = Path(tempfile.gettempdir()) / f"rt-lanes-{os.getuid()}"
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(directory)  # a fixed name in a shared temp dir: squatted?
            if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
                raise PermissionError(f"{directory} is not this user's own directory")
            os.chmod(directory, 0o700)
            for stale in directory.glob(f"{_actor_prefix()}-*.sock"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            self._directory = directory
        return self._directory


class _Connection:
    """One caller's lane: each ask a task on the actor's loop, each result sent as it ends."""

    def __init__(self, server: LaneServer, answer: Answer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self._server, self._answer, self._reader = server, answer, reader
        self._out = lane_wire.Outbox(writer)
        self._tasks: dict[int, asyncio.Task[None]] = {}

    async def serve(self) -> None:
        try:
            while True:
                kind, ask_id, payload = await lane_wire.read_frame(self._reader)
                if kind == lane_wire.CANCEL:
                    task = self._tasks.get(ask_id)
                    if task is not None:
                        task.cancel()
                    continue
                task = self._tasks[ask_id] = asyncio.get_running_loop().create_task(
                    self._one(ask_id, kind, payload))
                task.add_done_callback(functools.partial(self._ended, ask_id))
                # One turn of the loop per ask, as ask_batch does: its HTTP request leaves
                # before the next ask's pipeline runs (docs/performance.md).
                await asyncio.sleep(0)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the caller went away: nobody reads these replies any more
        finally:
            for task in self._tasks.values():
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            self._out.close()

    async def _one(self, ask_id: int, kind: int, payload: bytes) -> None:
        result: Reply | BaseException
        try:
            result = await self._answer(lane_wire.read_ask(kind, payload))
        except Exception as exc:  # a request that does not parse: its own error, as a value
            result = RaytroupeError(f"agent {self._server._label} could not read this request "
                                    f"({type(exc).__name__}: {exc})")
        self._server.asks += 1
        try:
            data = lane_wire.reply_frame(ask_id, result)
        except Exception:  # an error that does not pickle: its message still goes back
            data = lane_wire.reply_frame(ask_id, RaytroupeError(str(result)))
        self._out.send(data)


    def _ended(self, ask_id: int, task: asyncio.Task[None]) -> None:
        """An ask's task is done; if it was cancelled (even before it started), tell the
        caller it has ended: its attempts' records exist now."""
        self._tasks.pop(ask_id, None)
        if task.cancelled():
            self._out.send(lane_wire.frame(lane_wire.ENDED, ask_id))


def _actor_prefix() -> str:
    """The socket files' prefix: this actor's id (kept across restarts), or the process's."""
    actor = ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None
    return (actor or f"pid{os.getpid()}")[:16]
