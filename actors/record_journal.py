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

Layout: ``<dir>/<incarnation>.jsonl``, one ``CallRecord`` JSON per line; ``<dir>`` is per actor
(its id, kept across restarts) and per Ray session, in ``/dev/shm`` (memory) or else in the
session directory on the node (:func:`journal_dir`).
A file is emptied once everything written to it has been acknowledged.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
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
    """This incarnation's journal file, and the files earlier incarnations left behind.

    Args:
        directory: The actor's journal directory (:func:`actor_journal_dir`).
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.path = directory / f"{uuid.uuid4().hex}{_SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._written = False

    def __repr__(self) -> str:
        return f"RecordJournal({str(self.path)!r})"

    def leftovers(self) -> list[Path]:
        """Journals of earlier incarnations of this actor (their records may not be shipped)."""
        return sorted(p for p in self.directory.glob(f"*{_SUFFIX}") if p != self.path)

    def append(self, record: CallRecord) -> None:
        """Write one record before its reply leaves.

        A plain ``os.write`` of one line (tens of microseconds, no ``fsync``): an async actor
        may afford it on its loop, and the page cache is what survives a process kill.
        """
        os.write(self._fd, record.model_dump_json().encode() + b"\n")
        self._written = True

    def clear(self) -> None:
        """Everything written so far is acknowledged: empty the file."""
        if self._written:
            os.ftruncate(self._fd, 0)
            self._written = False

    def close(self) -> None:
        os.close(self._fd)


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
