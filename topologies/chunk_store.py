"""Resume for map-reduce: every finished chunk's mapped output, stored under a content key.

A run over thousands of chunks can die (a crash, a budget stop, Ctrl-C) after paying for most
of them. Each mapped output is committed as soon as it arrives, keyed by a hash of everything
that decides it: the model, the instructions, the prompt (which holds the chunk's text) and
``max_tokens``. A re-run computes the same keys, finds the finished chunks and pays only for the
missing ones; changing the question, the prompts or the model changes the keys, so a stale
answer is never reused. Keys name the rows: input file names never become storage names
(``docs/reliability.md`` §5).

Why SQLite: one file under the data dir, atomic commits, point lookups in microseconds, and no
20,000 small files. WAL with ``synchronous=NORMAL`` survives a killed process (not a power cut),
which is the failure resume is for; a result lost to a power cut is only paid again.

Example:
    >>> import tempfile, pathlib
    >>> store = ChunkStore(pathlib.Path(tempfile.mkdtemp()) / "chunks.sqlite3")
    >>> key = chunk_key(model="claude-haiku-5-5", system="Find dates.", prompt="...",
    ...                 max_tokens=256)
    >>> store.get(key) is None
    True
    >>> store.put(key, "1969-07-20")
    >>> store.get(key)
    '1969-07-20'
    >>> store.close()
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

__all__ = ["KEY_VERSION", "ChunkStore", "chunk_key"]

KEY_VERSION = 1
"""Part of every key: bump it when the mapper's request shape changes meaning."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mapped (
    key TEXT PRIMARY KEY,
    output TEXT NOT NULL,
    stored_at REAL NOT NULL
) WITHOUT ROWID
"""
_BATCH_SCHEMA = """
CREATE TABLE IF NOT EXISTS batched (
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
) WITHOUT ROWID
"""
"""Chunks sent in a Message Batch whose results are not stored yet: a resumed run collects
those batches (already paid for) instead of sending the chunks again."""


def chunk_key(*, model: str, system: str, prompt: str, max_tokens: int) -> str:
    """The hex SHA-256 of everything that decides a mapper's answer.

    Example:
        >>> a = chunk_key(model="m", system="s", prompt="p", max_tokens=1)
        >>> a == chunk_key(model="m", system="s", prompt="p", max_tokens=2)
        False
    """
    # JSON with fixed keys: unambiguous where plain concatenation would let "ab"+"c" equal
    # "a"+"bc".
    material = json.dumps({"v": KEY_VERSION, "model": model, "system": system,
                           "prompt": prompt, "max_tokens": max_tokens},
                          sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode()).hexdigest()


class ChunkStore:
    """Mapped outputs by key, in one SQLite file; used from one thread at a time.

    Args:
        path: The database file (its folder is created).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Used by one thread at a time: the driver's loop, then a worker thread may close it
        # (the close checkpoints the WAL: disk work kept off the loop).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            # Another run is switching this new file to WAL at this moment (two runs on one
            # data dir): SQLite answers "locked" without waiting. WAL persists in the file, and
            # until it lands the rollback journal is just as correct.
            pass
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute(_BATCH_SCHEMA)

    def __repr__(self) -> str:
        return f"ChunkStore({str(self.path)!r})"

    def get(self, key: str) -> str | None:
        """The stored output for ``key``, or None."""
        row = self._db.execute("SELECT output FROM mapped WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, output: str) -> None:
        """Store (or replace) ``key``'s output, committed before returning."""
        self._db.execute("INSERT OR REPLACE INTO mapped (key, output, stored_at) VALUES (?, ?, ?)",
                         (key, output, time.time()))

    def add_batch(self, batch_id: str, pairs: list[tuple[str, str]]) -> None:
        """Remember that ``batch_id`` carries these ``(custom_id, key)`` chunks."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO batched (batch_id, custom_id, key) "
                                 "VALUES (?, ?, ?)", [(batch_id, c, k) for c, k in pairs])

    def pending_batches(self) -> dict[str, list[tuple[str, str]]]:
        """Batches sent but not yet collected: batch id -> its ``(custom_id, key)`` chunks."""
        pending: dict[str, list[tuple[str, str]]] = {}
        for batch_id, custom_id, key in self._db.execute(
                "SELECT batch_id, custom_id, key FROM batched ORDER BY batch_id"):
            pending.setdefault(batch_id, []).append((custom_id, key))
        return pending

    def forget_batch(self, batch_id: str) -> None:
        """The batch is collected (its results stored): a resumed run no longer needs it."""
        self._db.execute("DELETE FROM batched WHERE batch_id = ?", (batch_id,))

    def count(self) -> int:
        """How many outputs are stored."""
        return self._db.execute("SELECT COUNT(*) FROM mapped").fetchone()[0]

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()
