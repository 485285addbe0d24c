"""Typed channels: pydantic messages from producers to a consumer actor, over plain actor calls.

A :class:`Channel` ``[T]`` wraps one actor method (``agent.ask``, ``stage.receive``...). Each
``send`` checks the message's type *before* anything is delivered, waits for a slot when
``max_in_flight`` deliveries are outstanding (backpressure instead of an unbounded queue), and
submits one async actor call (about 1 ms a hop, ``docs/ray-facts.md`` §3; not Compiled Graphs, which
are sync-only and static, nor ``ray.util.queue``, which is a slower actor in the middle).

Order: deliveries are submitted in send order and :meth:`Channel.replies` yields replies in send
order. A consumer that must also *process* in order gets ``max_in_flight=1``.

Drained: each reply is taken once, either by awaiting its :class:`Delivery` (``request``,
``fan_in``) or from :meth:`Channel.replies`; a channel keeps only the deliveries nobody has
taken yet, so a long-lived channel used through ``request`` holds nothing.

Large payloads never pass through the driver twice: :func:`fan_out` puts a message into the
object store once and hands every consumer the same reference, and a :class:`Delivery` (a typed
reference to a reply that has not been fetched) can be sent on to the next channel, which checks
its declared type and forwards the reference: stage-to-stage data moves between the actors'
object stores, not through the driver.

Example (the type check, before anything is sent):
    >>> from actors.messages import AskRequest
    >>> questions = Channel("lead->researcher", AskRequest, target=None, max_in_flight=4)
    >>> questions.check(AskRequest(prompt="What is Ray?")).prompt
    'What is Ray?'
    >>> questions.check("not a request")
    Traceback (most recent call last):
    ...
    actors.errors.MessageTypeError: channel 'lead->researcher' carries AskRequest, got str

With a consumer actor (``tests/topologies/test_channel.py`` runs these on Ray)::

    questions = Channel("lead->researcher", AskRequest, researcher.ask, reply_type=Reply)
    reply = await questions.request(AskRequest(prompt="What is Ray?"))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, Generic, TypeVar

import ray
from pydantic import BaseModel

from actors.errors import MessageTypeError
from topologies.errors import ChannelClosed

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

__all__ = ["Channel", "Delivery", "fan_in", "fan_out"]


class Delivery(Generic[R]):
    """A reply on its way: an ``ObjectRef`` and the type the channel declared for it.

    Await it to fetch the reply, or send it on to another channel unfetched.
    """

    def __init__(self, ref: ray.ObjectRef, reply_type: type | None, channel: str,
                 seq: int, on_taken: Callable[[int], None] | None = None) -> None:
        self.ref, self.reply_type, self.channel, self.seq = ref, reply_type, channel, seq
        self._on_taken = on_taken

    def __await__(self) -> Generator[Any, None, R]:
        self.take()
        return self.ref.__await__()

    def take(self) -> None:
        """Claim the reply: its channel stops holding it for ``replies()`` (awaiting does it)."""
        if self._on_taken is not None:
            self._on_taken(self.seq)

    def __repr__(self) -> str:
        kind = self.reply_type.__name__ if self.reply_type else "Any"
        return f"Delivery({self.channel!r} #{self.seq} -> {kind})"


class Channel(Generic[T]):
    """A typed, ordered, bounded conduit to one consumer actor method.

    Args:
        name: Shown in errors and progress (``"lead->researcher_1"``).
        message_type: The pydantic model the channel carries; subclasses are accepted.
        target: The consumer: a Ray actor method (``handle.ask``) taking one ``T``.
        reply_type: What the target returns, when known: lets a :class:`Delivery` be
            forwarded to a channel of that type without fetching it.
        max_in_flight: Deliveries outstanding at once; ``send`` waits beyond it.

    Example:
        >>> ch = Channel("to-stage", Item, stage.receive, max_in_flight=8)  # doctest: +SKIP
        >>> for item in items:                                              # doctest: +SKIP
        ...     await ch.send(item)        # waits while 8 are unanswered
        >>> await ch.close()                                                    # doctest: +SKIP
        >>> results = [r async for r in ch.replies()]    # in send order    # doctest: +SKIP
    """

    def __init__(self, name: str, message_type: type[T], target: Any, *,
                 reply_type: type | None = None, max_in_flight: int = 16) -> None:
        if max_in_flight < 1:
            raise ValueError(f"channel {name!r}: max_in_flight must be >= 1, got {max_in_flight}")
        self.name, self.message_type, self.target = name, message_type, target
        self.reply_type, self.max_in_flight = reply_type, max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, Delivery[Any]] = {}
        """Deliveries nobody has taken yet, by send number (in send order)."""
        self._arrived = asyncio.Condition()
        self._closed = False
        self._watchers: set[asyncio.Task[None]] = set()
        self.sent = 0
        """Messages delivered so far."""
        self.in_flight = 0
        """Deliveries submitted and not yet answered."""
        self.peak_in_flight = 0
        """The most deliveries ever outstanding at once (for tests and tuning)."""

    def __repr__(self) -> str:
        return (f"Channel({self.name!r}, {self.message_type.__name__}, sent={self.sent}, "
                f"in_flight={self.in_flight}/{self.max_in_flight})")

    def check(self, message: Any) -> T | Delivery[Any]:
        """Return ``message`` if this channel may carry it; raise ``MessageTypeError`` if not."""
        if isinstance(message, Delivery):
            if message.reply_type is not None and issubclass(message.reply_type,
                                                             self.message_type):
                return message
            actual = message.reply_type.__name__ if message.reply_type else "an untyped reply"
        elif isinstance(message, self.message_type):
            return message
        else:
            actual = type(message).__name__
        raise MessageTypeError(f"channel {self.name!r} carries {self.message_type.__name__}, "
                               f"got {actual}")

    async def send(self, message: T | Delivery[Any]) -> Delivery[Any]:
        """Check, wait for a slot, and deliver; returns the reply's :class:`Delivery`.

        Raises:
            MessageTypeError: ``message`` is not a ``T`` (nothing was delivered).
            ChannelClosed: the channel was closed.
        """
        checked = self.check(message)
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed; open a new one to send")
        await self._slots.acquire()
        if isinstance(checked, Delivery):
            checked.take()  # forwarded: the next stage has it, its first channel does not
        payload = checked.ref if isinstance(checked, Delivery) else checked
        delivery: Delivery[Any] = Delivery(self.target.remote(payload), self.reply_type,
                                           self.name, self.sent, self._taken)
        self.sent += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._pending[delivery.seq] = delivery
        # Keep a reference: the loop holds tasks weakly and would drop an unreferenced one.
        watcher = asyncio.get_running_loop().create_task(self._free_slot_when_answered(delivery))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return delivery

    async def request(self, message: T) -> Any:
        """Send and wait for the reply (one round trip, still bounded by ``max_in_flight``)."""
        return await (await self.send(message))

    async def close(self) -> None:
        """Refuse further sends; :meth:`replies` ends once the outstanding ones are yielded."""
        self._closed = True
        await self._notify()

    @property
    def unclaimed(self) -> int:
        """Deliveries sent whose reply nobody has taken yet (what ``replies()`` would yield)."""
        return len(self._pending)

    async def replies(self) -> AsyncIterator[Any]:
        """Yield the replies nobody has taken, in send order, until closed and drained.

        A consumer's exception is raised here, at its place in the order.
        """
        while True:
            async with self._arrived:
                await self._arrived.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                delivery = self._pending.pop(next(iter(self._pending)))
            yield await delivery

    def _taken(self, seq: int) -> None:
        self._pending.pop(seq, None)

    async def _free_slot_when_answered(self, delivery: Delivery[Any]) -> None:
        # The consumer's error belongs to whoever awaits the delivery; here only the slot
        # matters, and it is freed however the call ended.
        with contextlib.suppress(Exception):
            await delivery.ref
        self.in_flight -= 1
        self._slots.release()
        await self._notify()

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()


async def fan_out(channels: Sequence[Channel[T]], message: T) -> list[Delivery[Any]]:
    """Broadcast one message to several consumers, putting it in the object store once.

    Every consumer gets the same ``ObjectRef`` (Ray resolves it to the message), so a large
    payload is copied to each node's store at most once instead of once per call.

    Example:
        >>> deliveries = await fan_out([ch_a, ch_b], Brief(text=big_text))  # doctest: +SKIP
    """
    for channel in channels:
        channel.check(message)
    shared = Delivery(ray.put(message), type(message), "fan_out", 0)
    return [await channel.send(shared) for channel in channels]


async def fan_in(deliveries: Iterable[Delivery[Any] | Awaitable[Any]]) -> AsyncIterator[Any]:
    """Yield replies as they complete, fastest first (merge several channels' replies).

    Example:
        >>> async for reply in fan_in(deliveries):                # doctest: +SKIP
        ...     print(reply.agent, reply.text[:40])
    """
    waiting = [asyncio.ensure_future(_awaited(d)) for d in deliveries]
    for next_done in asyncio.as_completed(waiting):
        yield await next_done


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
