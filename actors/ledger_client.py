"""The per-process side of the Ledger: batched, retried-until-acknowledged records.

An Agent records every attempt, so one RPC per record would make the Ledger the hot spot
(about 3k calls/s per actor; docs/ray-facts.md §2). The client buffers records and sends them in
batches (``batch_size`` records, or whatever has waited ``linger_s``), one batch in flight at
a time, which also bounds what this process has queued at the Ledger. A batch is re-sent until
the Ledger acknowledges it: records are idempotent by ``(call_id, attempt)``, so a re-send after
an ambiguous failure (the Ledger died after committing) costs nothing, while giving up would
lose spend from the bill. Reservations are not batched: the caller must know before it sends.

Inside a named actor (an Agent), each record is also appended to a local journal
(:mod:`actors.record_journal`) when it is queued, so a reply need not wait for the Ledger's
acknowledgement to be safe from a ``kill -9`` of its process: :meth:`LedgerClient.persisted`
returns at once, and a restarted incarnation ships what its predecessors' journals hold.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import ray
from ray.exceptions import ActorDiedError, RayTaskError

from actors.errors import MessageTypeError, RaytroupeError, SingletonLost
from actors.messages import CallRecord
from actors.record_journal import RecordJournal, actor_journal_dir, read_journal
from actors.singletons import Singleton

_log = logging.getLogger(__name__)

RESERVE_WAIT_S = 120.0
"""Most seconds a reservation waits near the cap for the attempts in flight to settle: more
than any whole call takes (they settle when their records land), less than the Ledger's TTL
of a reservation whose caller died (600 s), after which a budget stop is the honest answer."""


class LedgerClient:
    """One per process: reserves budget for attempts and records them to the Ledger.

    Args:
        ledger: The Ledger as a :class:`~actors.singletons.Singleton` (found again by name if
            it dies), or a bare handle (``get_ledger(...)``).
        batch_size: Send as soon as this many records are waiting. Large, because a batch
            costs the Ledger ~1 ms of CPU as an RPC besides ~25 µs per record, and records are
            safe in the local journal meanwhile: a busy process sends about every
            ``linger_s`` (at 50, a host at 400 calls/s sent 8 batches a second).
        linger_s: Send records that have waited this long, however few.
        max_batch: Most records in one RPC (bounds its size after a long outage; 400 records
            pickle to ~90 KB, under the 100 KB that Ray still passes inline).
        backoff_s: First and largest pause between re-sends of an unacknowledged batch.
        journal_dir: Where to journal records locally; ``"actor"`` (the default): this named
            actor's journal directory, or none outside an actor; None: no journal.

    Example:
        >>> client = LedgerClient(get_ledger())
        >>> await client.reserve("r1", "call-7", 0, Decimal("0.0150"))
        >>> client.record(record)            # returns at once
        >>> await client.flush()             # every record acknowledged
    """

    def __init__(self, ledger: Any, *, batch_size: int = 250, linger_s: float = 0.5,
                 max_batch: int = 400, backoff_s: tuple[float, float] = (0.05, 2.0),
                 journal_dir: Path | Literal["actor"] | None = "actor") -> None:
        self._singleton = ledger if isinstance(ledger, Singleton) else \
            Singleton(None, None, handle=ledger)
        self._batch_size, self._linger_s, self._max_batch = batch_size, linger_s, max_batch
        self._backoff_s = backoff_s
        self.reserve_wait_s = RESERVE_WAIT_S
        """How long a reservation near the cap waits for others to settle before a refusal."""
        self._pending: list[CallRecord] = []
        self._in_flight = 0
        self._flushers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sender: asyncio.Task[None] | None = None
        self._has_records = asyncio.Event()
        self._due = asyncio.Event()
        self._queued = 0
        """Records queued so far; acknowledged in the order queued (one batch at a time)."""
        self._acked = 0
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        """Flushes waiting: each for the records queued before it (not for later ones)."""
        self.sent_batches = 0
        """Batches acknowledged so far (for tests and diagnosis)."""
        if journal_dir == "actor":
            journal_dir = actor_journal_dir()
        self._journal = RecordJournal(journal_dir) if journal_dir is not None else None
        self._replayed = threading.Event()
        self._replayed.set()
        if self._journal is not None and (leftovers := self._journal.leftovers()):
            self._replayed.clear()
            threading.Thread(target=self._replay, args=(leftovers,), daemon=True,
                             name="ledger-client-replay").start()

    def __repr__(self) -> str:
        return (f"LedgerClient(pending={len(self._pending)}, in_flight={self._in_flight}, "
                f"sent_batches={self.sent_batches})")

    @property
    def unacknowledged(self) -> int:
        """Records queued and not yet acknowledged by the Ledger (what the journal holds)."""
        return self._queued - self._acked

    async def reserve(self, run_id: str, call_id: str, attempt: int,
                      worst_case_usd: Decimal, ttl_s: float | None = None) -> None:
        """Reserve the attempt's worst-case cost against the run's budget (one RPC).

        ``ttl_s`` overrides the Ledger's reservation TTL for an attempt that may outlast it.
        Near the cap the Ledger holds the call until other attempts' reservations settle to
        their real cost (up to ``reserve_wait_s``) rather than refusing it while the spend
        still leaves room. Cancelled while it waits, the reservation is cancelled at the
        Ledger too (the caller also releases it, which withdraws it if it is still waiting).

        Raises:
            BudgetExceeded: the attempt could push the run past its cap; do not send it.
        """
        ledger = await self._singleton.ahandle()
        ref = ledger.reserve.remote(run_id, call_id, attempt, worst_case_usd, ttl_s,
                                    self.reserve_wait_s)
        try:
            await ref
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except RayTaskError as exc:
            # Re-raise our own error as itself, not Ray's wrapper subclass of it.
            if isinstance(exc.cause, RaytroupeError):
                raise exc.cause from None
            raise

    def record(self, record: CallRecord) -> None:
        """Queue one attempt's record; it is sent in the background and re-sent until acked.

        Must be called from the process's event loop (the one every call of this client uses).

        Raises:
            MessageTypeError: ``record`` is not a ``CallRecord``.
        """
        if not isinstance(record, CallRecord):
            raise MessageTypeError(
                f"LedgerClient.record takes a CallRecord, got {type(record).__name__}")
        self._start()
        if self._journal is not None:
            self._journal.append(record)
        self._pending.append(record)
        self._queued += 1
        self._has_records.set()
        if len(self._pending) >= self._batch_size:
            self._due.set()

    async def persisted(self) -> None:
        """Return once every queued record survives a kill of this process.

        With a local journal that is already true (records are written when queued); without
        one, it means acknowledged by the Ledger (:meth:`flush`).
        """
        if self._journal is None:
            await self.flush()

    async def flush(self) -> None:
        """Send what is queued now and wait until all of it is acknowledged.

        That includes records an earlier incarnation left in its journal, not records queued
        after this call: a run's end on a host that keeps answering other runs returns when
        its own records are in, not when the host next falls quiet. Bound the wait with
        ``asyncio.timeout`` if the Ledger may be gone for good: records stay queued, and
        retried, after a timeout.
        """
        if not self._replayed.is_set():
            await asyncio.to_thread(self._replayed.wait)
        if self._acked >= self._queued:
            return
        if self._pending:  # after a cancelled aclose(), records may wait for a new sender
            self._start()
            self._has_records.set()
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._queued, acked)
        self._flushes.append(entry)
        self._flushers += 1
        self._due.set()
        try:
            await acked
        finally:
            self._flushers -= 1
            if entry in self._flushes:
                self._flushes.remove(entry)

    async def aclose(self) -> None:
        """Flush, then stop the background sender."""
        try:
            await self.flush()
        finally:
            if self._sender is not None:
                self._sender.cancel()
                self._sender = None

    def _start(self) -> None:
        """Start the sender on the running loop, once (records must all come from that loop)."""
        loop = asyncio.get_running_loop()
        if self._sender is not None and not self._sender.done():
            if loop is not self._loop:
                raise RuntimeError("a LedgerClient is bound to the event loop that first used it")
            return
        self._loop = loop
        self._sender = loop.create_task(self._send_forever(), name="ledger-client-sender")

    async def _send_forever(self) -> None:
        while True:
            await self._has_records.wait()
            await self._linger()
            batch = self._pending[:self._max_batch]
            del self._pending[:self._max_batch]
            if not self._pending:
                self._has_records.clear()
            if self._journal is not None:
                self._journal.seal()  # records queued from now on go to a new segment
            self._in_flight = len(batch)
            try:
                await self._send_until_acked(batch)
            except asyncio.CancelledError:
                self._pending[:0] = batch  # unacknowledged: a restarted sender sends it again
                raise
            finally:
                self._in_flight = 0
            if self._journal is not None:
                self._journal.acknowledged(len(batch))  # oldest first, as they were written
            self._acked += len(batch)
            self._wake_flushes()

    def _wake_flushes(self) -> None:
        """Settle every flush whose records are all acknowledged now."""
        waiting = []
        for target, acked in self._flushes:
            if target > self._acked:
                waiting.append((target, acked))
            elif not acked.done():
                acked.set_result(None)
        self._flushes = waiting

    async def _linger(self) -> None:
        """Wait until a batch is full, someone flushes, or the records have waited linger_s."""
        if self._flushers or len(self._pending) >= self._batch_size:
            return
        self._due.clear()
        try:
            await asyncio.wait_for(self._due.wait(), self._linger_s)
        except TimeoutError:
            pass

    def _replay(self, paths: list[Path]) -> None:
        """Ship what earlier incarnations journaled, then delete their files (own thread).

        A thread, because it starts in ``__init__``, before the actor's event loop runs, and
        must ship even if no call ever comes to this incarnation.
        """
        try:
            for path in paths:
                records = read_journal(path)
                for start in range(0, len(records), self._max_batch):
                    asyncio.run(self._send_until_acked(records[start:start + self._max_batch]))
                if records:
                    _log.info("ledger client: shipped %d record(s) left in %s",
                              len(records), path.name)
                path.unlink(missing_ok=True)
        finally:
            self._replayed.set()

    async def _send_until_acked(self, batch: list[CallRecord]) -> None:
        """Re-send until acknowledged; a Ledger dead for good is looked up again by name.

        Records are never dropped: if no Ledger answers under the name within the bounded
        wait, one error line says so and the batch keeps being re-sent.
        """
        delay, failures = self._backoff_s[0], 0
        while True:
            ledger = None
            try:
                ledger = await self._singleton.ahandle()
                await ledger.record.remote(batch)
            except asyncio.CancelledError:
                raise
            except (ActorDiedError, SingletonLost):
                try:
                    await self._singleton.find_again(ledger)
                except SingletonLost as exc:
                    _log.error("ledger client: %d record(s) kept, not acknowledged: %s",
                               len(batch), exc)
                    await asyncio.sleep(self._backoff_s[1])
            except Exception as exc:  # any failure: the batch is idempotent, so re-send it
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    _log.warning("ledger client: %d record(s) not acknowledged (try %d): %s",
                                 len(batch), failures, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff_s[1])
            else:
                self.sent_batches += 1
                return
