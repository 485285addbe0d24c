"""The frames of a lane (``actors/lane_server.py``, ``actors/lane_client.py``) and its address.

A frame is a 9-byte header (payload length, kind, ask id: ``!IBI``) and its payload. The
caller's first frame is ``HELLO`` with the lane's token; the host answers ``WELCOME`` or
``REFUSED``. Then the caller sends ``ASK`` (an ``AskRequest`` as pydantic JSON: exact, and
faster than pickle both ways, ``docs/performance.md``) or ``ASK_PICKLED`` (a request carrying
a ``check`` function or an ``output_schema`` class, which JSON cannot carry), and ``CANCEL``;
the host sends back ``REPLY`` (a ``Reply`` as JSON), ``ERROR`` (the request's ``RaytroupeError``,
pickled as Ray pickles it: errors carry their fields through ``__reduce__``) or ``ENDED`` (a
cancelled ask has finished on the host: its attempts' records exist).

Example:
    >>> frame(ASK, 7, b"{}")[:9] == HEADER.pack(2, ASK, 7)
    True
"""

from __future__ import annotations

import asyncio
import pickle  # nosec B403 - the lane's peers are authenticated: see actors/lane_server.py
import struct
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr

from actors.messages import AskRequest, Reply

HEADER = struct.Struct("!IBI")
HELLO, WELCOME, REFUSED, ASK, ASK_PICKLED, CANCEL, REPLY, ERROR, ENDED = range(1, 10)
MAX_FRAME = 64 * 1024 * 1024
"""Largest payload a peer accepts (a reply with a long text and tool blocks is far below)."""


class LaneAddress(BaseModel):
    """Where a caller on the host's node connects, and the token its first frame carries."""

    model_config = ConfigDict(frozen=True)

    path: str
    """The unix socket, in a 0700 directory; it exists only until the caller connects."""
    token: SecretStr
    """Random (``secrets``), one per lane, good for one connection."""
    node_id: str
    """The host's Ray node: a caller elsewhere takes Ray's path."""


def frame(kind: int, ask_id: int = 0, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind, ask_id) + payload


async def read_frame(reader: asyncio.StreamReader,
                     limit: int = MAX_FRAME) -> tuple[int, int, bytes]:
    """The next frame: (kind, ask id, payload); ``limit``: the largest payload taken (a peer
    not yet authenticated gets the token's size, so it cannot make the host buffer more).

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection.
        ConnectionError: a frame larger than ``limit`` (not a lane peer).
    """
    size, kind, ask_id = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > limit:
        raise ConnectionError(f"a lane frame of {size} bytes: not a lane peer")
    return kind, ask_id, (await reader.readexactly(size) if size else b"")


def ask_frame(ask_id: int, request: AskRequest) -> bytes:
    """An ask as JSON, or pickled when it carries code JSON cannot (``check``,
    ``output_schema``): Ray's own pickler then, which takes the lambdas Ray's path takes."""
    if request.check is None and request.output_schema is None:
        return frame(ASK, ask_id, request.model_dump_json().encode())
    from ray import cloudpickle  # the rare path: only these requests pay its import

    return frame(ASK_PICKLED, ask_id, cloudpickle.dumps(request))


def read_ask(kind: int, payload: bytes) -> AskRequest:
    if kind == ASK:
        return AskRequest.model_validate_json(payload)
    return _unpickled(payload, AskRequest)


def reply_frame(ask_id: int, result: Reply | BaseException) -> bytes:
    """A reply as JSON; an error pickled, as Ray's path pickles it (``__reduce__``)."""
    if isinstance(result, Reply):
        return frame(REPLY, ask_id, result.model_dump_json().encode())
    return frame(ERROR, ask_id, pickle.dumps(result))


def read_reply(kind: int, payload: bytes) -> Reply | BaseException:
    if kind == REPLY:
        return Reply.model_validate_json(payload)
    return _unpickled(payload, BaseException)


def _unpickled(payload: bytes, expected: type[Any]) -> Any:
    """A pickled ask or error, only ever read from an authenticated peer: the host reads a
    caller's frames once its first frame carried the lane's token, which the caller got from
    the host through Ray (so it can run any code there through Ray anyway: ``__ray_call__``);
    the caller reads the host it connected to in a 0700 directory of this user, which only this
    user's processes can listen in."""
    value = pickle.loads(payload)  # nosec B301 - authenticated peer, see above
    if not isinstance(value, expected):
        raise TypeError(f"a lane frame holds a {type(value).__name__}, not {expected.__name__}")
    return value


class Outbox:
    """Frames written together once per loop turn: a burst of replies (or asks) that finish
    in one turn costs one ``send`` instead of one each."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        if not self._frames:
            asyncio.get_running_loop().call_soon(self._flush)
        self._frames.append(data)

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def _flush(self) -> None:
        if self._frames and not self._writer.is_closing():
            self._writer.write(b"".join(self._frames))
        self._frames.clear()
