"""An agent process's local, append-only journal of the Ledger records it has not shipped yet.

Why: waiting for the Ledger's acknowledgement before every reply cost one Ledger round trip per
reply (about 0.7 ms of Ledger CPU and 4 ms of latency per call; ``docs/performance.md``). With
this journal a record is written to a file on the agent's node *before* the reply leaves, then
shipped in batches; the Ledger deduplicates by ``(call_id, attempt)``, so shipping a record
twice costs nothing.

What survives what (``docs/architecture.md``): a ``write`` to a local file is in the kernel's
memory (tmpfs or page cache) when it returns, so a ``kill -9`` (or OOM kill) of the agent
process loses nothing: its restarted incarnation, on the same node and with the same actor id,
ships the files its predecessors left. Only the loss of the node itself (power, kernel, disk)
loses what had not been shipped yet, at most ``linger_s`` worth of records.

Layout: ``<dir>/<incarnation>-<segment>.jsonl``, one ``CallRecord`` JSON per line; ``<dir>`` is
per actor (its id, kept across restarts) and per Ray session, in ``/dev/shm`` (memory) or else
in the session directory on the node (:func:`journal_dir`).
A segment is deleted once every record written to it has been acknowledged.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from collections import deque
from pathlib import Path

import ray
from pydantic import ValidationError

from actors.messages import CallRecord

_log = logging.getLogger(__name__)
_SUFFIX = ".jsonl"


def actor_journal_dir() -> Path | None:
    """This actor's journal directory, or None outside a named actor (a driver, a test).

    Keyed by the actor's id, which a restarted incarnation keeps (its name is not enough: an
    actor's runtime context reports its driver's namespace, not the one it was named in).
    """
    try:
        context = ray.get_runtime_context()
        actor_id = context.get_actor_id()
        named = bool(actor_id and context.get_actor_name())
    except Exception:  # Ray not initialised: no actor, no journal
        return None
    return journal_dir(session_dir(), actor_id) if named else None


def journal_dir(session: Path, actor_id: str) -> Path:
    """The journal directory of the actor ``actor_id`` (hex) of a Ray session.

    In ``/dev/shm`` when the node has it: a tmpfs is memory, so it survives a process kill as
    the page cache does, without the disk. On the shared disk of the box it was measured,
    ``os.write`` of one line stalled for up to a millisecond behind other processes' fsyncs,
    7 % of an agent's CPU (``docs/performance.md``). The session's name keeps sessions apart.
    """
    root = _SHM / "raytroupe-records" / session.name if _SHM.is_dir() else \
        session / "raytroupe-records"
    return root / actor_id


# A tmpfs on purpose (see actor_journal_dir).
_SHM = Path("/dev/shm")  # nosec B108


def session_dir() -> Path:
    """Ray's session directory on this node (it ends with the cluster's session)."""
    try:
        return Path(ray._private.worker.global_worker.node.get_session_dir_path())
    except Exception:  # no node object in this process: fall back to the temp dir
        return Path(tempfile.gettempdir()) / "raytroupe-session"


class RecordJournal:
    """This incarnation's journal, in segments, and the files earlier incarnations left behind.

    Records are acknowledged in the order they were written (one batch in flight at a time,
    oldest first), so the journal keeps a count of unacknowledged records per segment: the
    sender seals the segment when it takes a batch (later records go to a new one) and a
    segment is deleted once all of its records are acknowledged. One file emptied only when
    nothing at all was queued never emptied on a busy host (a record arrives during every
    send): it grew by every record for as long as the host lived, in memory (``/dev/shm``).

    Args:
        directory: The actor's journal directory (:func:`actor_journal_dir`).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._incarnation = uuid.uuid4().hex
        self._segments: deque[_Segment] = deque()
        self._fd = -1
        self._open_segment()

    def __repr__(self) -> str:
        return f"RecordJournal({str(self.path)!r}, segments={len(self._segments)})"

    @property
    def path(self) -> Path:
        """The segment records are appended to now."""
        return self._segments[-1].path

    def leftovers(self) -> list[Path]:
        """Journals of earlier incarnations of this actor (their records may not be shipped)."""
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}")
                      if not p.name.startswith(self._incarnation))

    def append(self, record: CallRecord) -> None:
        """Write one record before its reply leaves.

        A plain ``os.write`` of one line (tens of microseconds, no ``fsync``): an async actor
        may afford it on its loop, and the page cache is what survives a process kill.
        """
        os.write(self._fd, record.model_dump_json().encode() + b"\n")
        self._segments[-1].unacked += 1

    def seal(self) -> None:
        """A batch is being taken: later records go to a new segment, so that this one can be
        deleted once the batch is acknowledged."""
        if self._segments[-1].unacked:
            os.close(self._fd)
            self._open_segment()

    def acknowledged(self, count: int) -> None:
        """The oldest ``count`` unacknowledged records are acknowledged: delete every sealed
        segment that holds nothing else."""
        for segment in self._segments:
            taken = min(count, segment.unacked)
            segment.unacked -= taken
            count -= taken
            if not count:
                break
        while len(self._segments) > 1 and not self._segments[0].unacked:
            self._segments.popleft().path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open segment; one holding nothing unacknowledged is deleted."""
        os.close(self._fd)
        self._fd = -1
        while self._segments and not self._segments[0].unacked:
            self._segments.popleft().path.unlink(missing_ok=True)

    def _open_segment(self) -> None:
        number = self._segments[-1].number + 1 if self._segments else 0
        path = self.directory / f"{self._incarnation}-{number:06d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segments.append(_Segment(path, number))


class _Segment:
    __slots__ = ("number", "path", "unacked")

    def __init__(self, path: Path, number: int) -> None:
        self.path, self.number, self.unacked = path, number, 0


def read_journal(path: Path) -> list[CallRecord]:
    """The records of a journal file; a line that does not parse is logged and skipped."""
    records = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(CallRecord.model_validate_json(line))
        except ValidationError:
            _log.warning("record journal %s: line %d is not a record; skipped", path, number)
    return records
