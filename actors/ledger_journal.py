"""The Ledger's SQLite journal: the durable truth behind every acknowledged record and budget.

One file, ``<data_dir>/ledger.sqlite``, in WAL mode. The Ledger acknowledges a record only after
the transaction holding it has committed, so a Ledger killed at any moment (``ray.kill``,
``kill -9``) reloads everything it ever acknowledged. Writes go through one writer thread that
commits whatever has queued up in a single transaction (group commit): the actor's event loop
never blocks on the disk, and 100 concurrent writers cost one fsync, not 100.

Three tables: ``calls`` (one row per attempt, primary key ``(call_id, attempt)``, so a duplicate
is ignored by the database itself), ``budgets`` (a run's cap) and ``reservations`` (budget held
for attempts in flight, with an expiry so a dead caller cannot lock a budget forever).
Costs are stored as TEXT and read back as ``Decimal``: a float would drift from the bill.

The readers (:func:`read_entries`, :func:`read_run_ids`) open the file read-only, so the
``raytroupe ledger`` command can inspect a journal without Ray and without changing it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict

from actors.errors import ConfigError
from actors.messages import CallRecord, Usage

JOURNAL_NAME = "ledger.sqlite"
"""The journal's file name inside the data directory."""

_SCHEMA_VERSION = 1
_MAX_GROUP = 256
"""Most write jobs committed in one transaction; bounds how long one commit holds the lock."""
_KEY_PATTERN = re.compile(r"sk-ant-[A-Za-z0-9_\-]*")
_log = logging.getLogger(__name__)

_CALL_COLUMNS = (
    "call_id", "attempt", "incarnation", "run_id", "topology", "agent", "role", "tier", "model",
    "status", "source", "speculative", "streamed", "http_status", "error_type", "request_id",
    "started_at", "latency_s", "ttft_s", "input_tokens", "output_tokens", "cache_write_5m",
    "cache_write_1h", "cache_read", "cost_usd", "recorded_at",
)
_USAGE_COLUMNS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h",
                  "cache_read")
_TEXT_COLUMNS = frozenset({"incarnation", "topology", "agent", "role", "error_type",
                           "request_id", "call_id", "run_id"})
_RECORD_COLUMNS = _CALL_COLUMNS[:-len(_USAGE_COLUMNS) - 2]
"""The columns read from the ``CallRecord`` itself (then its usage, its cost, when received)."""
_TEXT_INDEXES = tuple(i for i, name in enumerate(_RECORD_COLUMNS) if name in _TEXT_COLUMNS)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT NOT NULL, attempt INTEGER NOT NULL, incarnation TEXT NOT NULL,
    run_id TEXT NOT NULL, topology TEXT NOT NULL, agent TEXT NOT NULL, role TEXT NOT NULL,
    tier TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, source TEXT NOT NULL,
    speculative INTEGER NOT NULL, streamed INTEGER NOT NULL, http_status INTEGER,
    error_type TEXT, request_id TEXT, started_at REAL NOT NULL, latency_s REAL NOT NULL,
    ttft_s REAL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL,
    cache_read INTEGER NOT NULL, cost_usd TEXT NOT NULL, recorded_at REAL NOT NULL,
    PRIMARY KEY (call_id, attempt)
);
CREATE INDEX IF NOT EXISTS calls_by_run ON calls (run_id, started_at);
CREATE TABLE IF NOT EXISTS budgets (run_id TEXT PRIMARY KEY, cap_usd TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (
    call_id TEXT NOT NULL, attempt INTEGER NOT NULL, run_id TEXT NOT NULL,
    amount_usd TEXT NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (call_id, attempt)
);
PRAGMA user_version = {_SCHEMA_VERSION};
"""


class JournalEntry(BaseModel):
    """One journaled attempt: the record as received, priced when it arrived."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["entry"] = "entry"
    record: CallRecord
    cost_usd: Decimal
    """What the provider bills for this attempt (0 for a response-cache hit)."""
    recorded_at: float
    """Unix time the Ledger received the record."""


class Reservation(BaseModel):
    """Budget held for one attempt in flight, released by its record or by expiry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["reservation"] = "reservation"
    run_id: str
    call_id: str
    attempt: int
    amount_usd: Decimal
    """The attempt's worst-case cost."""
    expires_at: float
    """Unix time after which the caller is presumed dead and the budget freed."""


class JournalWrite(BaseModel):
    """One atomic change to the journal: all of it commits, or none of it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["write"] = "write"
    entries: tuple[JournalEntry, ...] = ()
    """Attempts to insert (duplicates ignored); each also deletes its reservation."""
    reserve: tuple[Reservation, ...] = ()
    """Reservations to add or refresh."""
    release: tuple[tuple[str, int], ...] = ()
    """``(call_id, attempt)`` of reservations to drop."""
    budgets: tuple[tuple[str, Decimal | None], ...] = ()
    """``(run_id, cap)`` to set; a ``None`` cap removes the run's budget."""


class JournalState(BaseModel):
    """What a (re)starting Ledger needs in memory, read back from the journal."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["state"] = "state"
    spent: dict[str, Decimal]
    """Cost of every journaled attempt, by run."""
    budgets: dict[str, Decimal]
    """Caps of the runs that have one."""
    reservations: tuple[Reservation, ...]
    """Reservations not yet expired."""
    entries: int
    """How many attempts the journal holds."""


class RollupRow(NamedTuple):
    """The columns of one attempt that a roll-up reads, its group key first.

    Roll-ups read every row of a run, so they read plain tuples rather than models: about
    ten times faster than rebuilding each ``CallRecord``.
    """

    key: str
    call_id: str
    attempt: int
    status: str
    http_status: int | None
    source: str
    input_tokens: int
    output_tokens: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    cost_usd: str
    latency_s: float
    ttft_s: float | None
    started_at: float
    model: str
    """The model id: a response-cache hit's saving is priced from it."""


_KEY_COLUMNS = {"run": "run_id", "agent": "agent", "tier": "tier", "topology": "topology",
                "model": "model"}


class LedgerJournal:
    """The journal file plus its writer thread.

    Args:
        path: The SQLite file; its directory is created if missing.

    Example:
        >>> journal = LedgerJournal(tmp_path / JOURNAL_NAME)
        >>> state = journal.load(now=time.time())
        >>> inserted = await journal.write(JournalWrite(entries=(entry,)))   # (True,)
        >>> journal.close()
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _make_data_dir(path.parent)
        with _opened(path) as conn:
            conn.executescript(_SCHEMA)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ledger-journal", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"LedgerJournal({str(self.path)!r}, writer_alive={self._thread.is_alive()})"

    def load(self, now: float) -> JournalState:
        """Read back spend, budgets and live reservations; drop reservations expired by ``now``.

        Runs synchronously: a Ledger calls it once, in ``__init__``, before serving anything.
        """
        spent: defaultdict[str, Decimal] = defaultdict(Decimal)
        with _opened(self.path) as conn:
            count = 0
            for run_id, cost in conn.execute("SELECT run_id, cost_usd FROM calls"):
                spent[run_id] += Decimal(cost)
                count += 1
            budgets = {run: Decimal(cap) for run, cap in
                       conn.execute("SELECT run_id, cap_usd FROM budgets")}
            conn.execute("DELETE FROM reservations WHERE expires_at <= ?", (now,))
            reservations = tuple(
                Reservation(run_id=run, call_id=call, attempt=attempt,
                            amount_usd=Decimal(amount), expires_at=expires)
                for call, attempt, run, amount, expires in conn.execute(
                    "SELECT call_id, attempt, run_id, amount_usd, expires_at FROM reservations")
            )
        return JournalState(spent=dict(spent), budgets=budgets, reservations=reservations,
                            entries=count)

    async def write(self, change: JournalWrite) -> tuple[bool, ...]:
        """Commit ``change`` and return, per entry, whether it was new (False: a duplicate).

        Raises:
            sqlite3.Error | OSError: the commit failed; nothing of ``change`` was written.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[bool, ...]] = loop.create_future()
        self._jobs.put(_Job(change, loop, future))
        return await future

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread (blocks until it has)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(timeout=30)

    def _run(self) -> None:
        """Writer thread: take every queued job, commit them as one transaction, repeat."""
        conn = _connect(self.path)
        try:
            while True:
                jobs = [self._jobs.get()]
                while len(jobs) < _MAX_GROUP and jobs[-1] is not None:
                    try:
                        jobs.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                live = [job for job in jobs if job is not None]
                if live:
                    _commit(conn, live)
                if len(live) < len(jobs):
                    return
        finally:
            conn.close()


class _Job:
    """A queued change and the future (on its caller's loop) that its commit resolves."""

    __slots__ = ("change", "future", "loop")

    def __init__(self, change: JournalWrite, loop: asyncio.AbstractEventLoop,
                 future: asyncio.Future[tuple[bool, ...]]) -> None:
        self.change, self.loop, self.future = change, loop, future

    def settle(self, result: tuple[bool, ...] | None, error: BaseException | None) -> None:
        """Resolve the future from the writer thread; a closed loop has nobody left to tell."""
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future, result, error)
        except RuntimeError:
            pass


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the commit stands regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _commit(conn: sqlite3.Connection, jobs: list[_Job]) -> None:
    """Apply ``jobs`` in order in one transaction; on failure none is applied and all fail."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        results = [_apply(conn, job.change) for job in jobs]
        conn.execute("COMMIT")
    except Exception as exc:  # the thread must survive anything, or every writer hangs
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        _log.error("ledger journal commit failed (%d jobs): %s", len(jobs), exc)
        for job in jobs:
            job.settle(None, exc)
        return
    for job, result in zip(jobs, results, strict=True):
        job.settle(result, None)


def _apply(conn: sqlite3.Connection, change: JournalWrite) -> tuple[bool, ...]:
    inserted = _insert_entries(conn, change.entries)
    for res in change.reserve:  # ids kept as the calls table keeps them: never with a key
        conn.execute("INSERT OR REPLACE INTO reservations VALUES (?, ?, ?, ?, ?)",
                     (_kept(res.call_id), res.attempt, _kept(res.run_id),
                      str(res.amount_usd), res.expires_at))
    for call_id, attempt in change.release:
        conn.execute("DELETE FROM reservations WHERE call_id = ? AND attempt = ?",
                     (_kept(call_id), attempt))
    for run_id, cap in change.budgets:
        if cap is None:
            conn.execute("DELETE FROM budgets WHERE run_id = ?", (_kept(run_id),))
        else:
            conn.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?)",
                         (_kept(run_id), str(cap)))
    return inserted


_INSERT = (f"INSERT OR IGNORE INTO calls ({', '.join(_CALL_COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(_CALL_COLUMNS))})")
_IN_CHUNK = 500
"""Call ids per ``IN (...)`` lookup: under SQLite's limit of bound parameters."""


def _insert_entries(conn: sqlite3.Connection,
                    entries: tuple[JournalEntry, ...]) -> tuple[bool, ...]:
    """Insert a batch's attempts and drop their reservations; say which were new.

    One lookup of the keys already journaled and two ``executemany`` per batch rather than
    two statements per attempt (half the writer's CPU per record). Exact: the caller's
    ``BEGIN IMMEDIATE`` keeps any other writer out until the commit, and a second copy of an
    attempt within the batch is a duplicate too.
    """
    if not entries:
        return ()
    rows = [_row_of(entry) for entry in entries]
    # Looked up as the table keeps them: a call id holding a key is kept redacted.
    stored = [(row[0], row[1]) for row in rows]
    known = _journaled(conn, stored)
    inserted = []
    for key in stored:
        inserted.append(key not in known)
        known.add(key)
    conn.executemany(_INSERT, [row for row, new in zip(rows, inserted, strict=True) if new])
    conn.executemany("DELETE FROM reservations WHERE call_id = ? AND attempt = ?", stored)
    return tuple(inserted)


def _journaled(conn: sqlite3.Connection, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of ``keys`` the ``calls`` table holds already."""
    wanted, found = set(keys), set()
    call_ids = sorted({call_id for call_id, _ in keys})
    for start in range(0, len(call_ids), _IN_CHUNK):
        chunk = call_ids[start:start + _IN_CHUNK]
        marks = ", ".join("?" * len(chunk))  # placeholders only; the ids are bound
        query = f"SELECT call_id, attempt FROM calls WHERE call_id IN ({marks})"  # nosec B608
        found.update(row for row in conn.execute(query, chunk) if row in wanted)
    return found


def redact(text: str) -> str:
    """Replace anything shaped like an Anthropic API key: a journal must never hold one."""
    return _KEY_PATTERN.sub("[redacted-key]", text)


def _kept(text: str) -> str:
    """``text`` as the journal keeps it: redacted if it holds something shaped like a key."""
    return redact(text) if "sk-ant-" in text else text


def _row_of(entry: JournalEntry) -> tuple[Any, ...]:
    """The ``calls`` row of an entry, read field by field (a ``model_dump`` cost 3x more)."""
    record, usage = entry.record, entry.record.usage
    row = [getattr(record, name) for name in _RECORD_COLUMNS]
    for i in _TEXT_INDEXES:
        if isinstance(row[i], str) and "sk-ant-" in row[i]:  # what ``redact`` replaces
            row[i] = redact(row[i])
    row.extend(getattr(usage, name) for name in _USAGE_COLUMNS)
    row.extend((str(entry.cost_usd), entry.recorded_at))
    return tuple(row)


def _entry_of(row: sqlite3.Row) -> JournalEntry:
    """Rebuild an entry from its row without re-validating it.

    Every row was validated as a ``CallRecord`` before it was written, and the schema keeps
    its types; skipping validation makes reading about 10x faster (roll-ups read every row).
    """
    fields = dict(zip(_CALL_COLUMNS, row, strict=True))
    usage = Usage.model_construct(**{name: fields.pop(name) for name in _USAGE_COLUMNS})
    cost, recorded_at = Decimal(fields.pop("cost_usd")), fields.pop("recorded_at")
    fields["speculative"], fields["streamed"] = bool(fields["speculative"]), \
        bool(fields["streamed"])
    record = CallRecord.model_construct(usage=usage, **fields)
    return JournalEntry.model_construct(record=record, cost_usd=cost, recorded_at=recorded_at)


def _connect(path: Path) -> sqlite3.Connection:
    """A read-write connection in WAL mode, committing only when told (``BEGIN``/``COMMIT``)."""
    sync = os.environ.get("RAYTROUPE_LEDGER_SYNC", "NORMAL").upper()
    if sync not in _SYNC_LEVELS:  # it is spliced into a PRAGMA: only SQLite's own words pass
        raise ConfigError(f"RAYTROUPE_LEDGER_SYNC={sync!r}: choose one of "
                          f"{', '.join(_SYNC_LEVELS)}")
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=True)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit is in the WAL file (the OS's page cache) before we
    # acknowledge it, so killing any process, the Ledger's included, loses nothing
    # acknowledged; only an OS crash or power cut could lose the last commits. FULL (an fsync
    # per commit) cost ~5 ms per reply, because an Agent waits for its records' ack before it
    # answers (benchmarks/overhead.py); set RAYTROUPE_LEDGER_SYNC=FULL to pay for power cuts.
    conn.execute(f"PRAGMA synchronous={sync}")
    return conn


_SYNC_LEVELS = ("NORMAL", "FULL", "EXTRA", "OFF")
_DAMAGED = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
_UNOPENABLE = frozenset({"SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY", "SQLITE_AUTH"})


@contextmanager
def _opened(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the journal, closed on exit.

    A journal that is damaged (not SQLite, truncated) or cannot be opened is a
    :class:`ConfigError` naming the file: no retry or restart can fix it, so the Ledger fails
    once and the ``ledger`` command prints one line. Transient errors (a lock) stay as they are.
    """
    try:
        with closing(_connect_read_only(path) if read_only else _connect(path)) as conn:
            yield conn
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "")
        if name in _DAMAGED:
            raise ConfigError(f"the Ledger journal {path} is damaged ({exc}); move it aside to "
                              "start a new journal, or restore it from a backup") from None
        if name in _UNOPENABLE:
            raise ConfigError(f"the Ledger journal {path} cannot be opened ({exc})") from None
        raise


def _make_data_dir(directory: Path) -> None:
    """Create the data directory; a file in its place is a ``ConfigError`` naming it."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the Ledger's data dir {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission, a read-only disk
        raise ConfigError(f"the Ledger's data dir {directory} cannot be created: "
                          f"{exc.strerror or exc}") from None


def check_data_dir(directory: Path) -> None:
    """Refuse, before anything starts, a data dir the Ledger could not use.

    Cheap (the journal's schema is read, not its rows): a file where the directory should be,
    a journal that is not SQLite or whose truncation reached its schema. Damage deeper in the
    file is found when the Ledger loads it, and fails it once with the same message.

    Raises:
        ConfigError: naming the directory or the journal.
    """
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the Ledger's data dir {directory} is a file, not a directory")
    path = directory / JOURNAL_NAME
    if path.exists() and not path.is_file():
        raise ConfigError(f"the Ledger journal {path} is not a file")
    if path.exists():
        with _opened(path, read_only=True) as conn:
            conn.execute("SELECT name FROM sqlite_master").fetchall()


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing journal without creating or changing it; ``FileNotFoundError`` if absent."""
    if not path.is_file():
        raise FileNotFoundError(path)
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def iter_entries(path: Path, run_id: str | None = None) -> Iterator[JournalEntry]:
    """Yield the journaled attempts (of ``run_id``, or all), oldest first.

    Raises:
        FileNotFoundError: there is no journal at ``path``.
        ConfigError: the journal is damaged or cannot be opened.
    """
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
    with _opened(path, read_only=True) as conn:
        # Column names are constants and ``where`` is one of two literals; values are bound.
        query = f"SELECT {', '.join(_CALL_COLUMNS)} FROM calls {where} ORDER BY started_at"  # nosec
        for row in conn.execute(query, args):
            yield _entry_of(row)


def read_entries(path: Path, run_id: str | None = None) -> list[JournalEntry]:
    """All journaled attempts (of ``run_id``, or all), oldest first; see :func:`iter_entries`."""
    return list(iter_entries(path, run_id))


def iter_rollup_rows(path: Path, run_id: str | None, by: str) -> Iterator[RollupRow]:
    """Yield the roll-up columns of the journaled attempts (of ``run_id``, or all).

    Args:
        path: The journal file.
        run_id: One run, or None for every run.
        by: The grouping (``run``, ``agent``, ``tier``, ``topology``, ``model``): its column
            becomes each row's ``key``.

    Raises:
        FileNotFoundError: there is no journal at ``path``.
        ConfigError: the journal is damaged or cannot be opened.
        KeyError: ``by`` is not a grouping.
    """
    columns = ", ".join((_KEY_COLUMNS[by], *RollupRow._fields[1:]))
    where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
    with _opened(path, read_only=True) as conn:
        # ``columns`` come from constants (``by`` is checked against them); values are bound.
        query = f"SELECT {columns} FROM calls {where}"  # nosec
        for row in conn.execute(query, args):
            yield RollupRow._make(row)


def read_run_ids(path: Path) -> list[str]:
    """The runs the journal knows (with calls or a budget), sorted by name.

    Raises:
        FileNotFoundError: there is no journal at ``path``.
        ConfigError: the journal is damaged or cannot be opened.
    """
    with _opened(path, read_only=True) as conn:
        rows = conn.execute("SELECT run_id FROM calls UNION SELECT run_id FROM budgets "
                            "ORDER BY run_id").fetchall()
    return [run for (run,) in rows]
