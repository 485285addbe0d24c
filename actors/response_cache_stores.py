"""Where the response cache keeps its entries: SQLite on one node, Redis for a cluster.

Both stores answer the same five calls (:class:`CacheStore`) and count lookups, hits and the
USD saved, for ``raytroupe cache stats``. :func:`open_store` picks one from a URL:
``sqlite:///path/to/response_cache.sqlite`` (the default, in the data dir) or
``redis://host:port/db`` (extra ``raytroupe[redis]``).

SQLite is blocking, so every call runs in a worker thread (``asyncio.to_thread``): the actor's
event loop never waits on the disk. WAL mode lets the actors of one node read while one writes.
Redis goes through redis-py's asyncio client; entries expire by Redis's own ``EX``.

Example:
    >>> store = open_store("sqlite:///tmp/rc.sqlite")                 # doctest: +SKIP
    >>> await store.put("k", entry, ttl_s=3600)                       # doctest: +SKIP
    >>> (await store.get("k")).cost_usd == entry.cost_usd             # doctest: +SKIP
    True
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from actors.errors import ConfigError
from actors.response_cache import CachedReply, CacheStats

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, stored_at REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_REDIS_PREFIX = "raytroupe:rc:"
_REDIS_STATS = "raytroupe:rc-stats"
_PICO = Decimal(10) ** 12
"""Redis counts saved USD in integer pico-dollars: HINCRBY is exact, a float sum would drift."""


class CacheStore(Protocol):
    """What the Agent and the ``cache`` command need of a store."""

    url: str

    async def get(self, key: str) -> CachedReply | None: ...
    async def put(self, key: str, entry: CachedReply, ttl_s: float) -> None: ...
    async def stats(self) -> CacheStats: ...
    async def clear(self, older_than_s: float | None = None) -> int: ...
    async def close(self) -> None: ...


def open_store(url: str) -> CacheStore:
    """The store ``url`` names.

    Raises:
        ConfigError: the scheme is neither ``sqlite`` nor ``redis``/``rediss``, or Redis is
            asked for without the ``redis`` package.
    """
    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ConfigError(f"response cache URL {url!r}: use sqlite:///PATH or redis://HOST:PORT/DB")


class SqliteStore:
    """Entries in one SQLite file (WAL), one connection per thread that touches it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._local = threading.local()
        self._ready = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def get(self, key: str) -> CachedReply | None:
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, entry: CachedReply, ttl_s: float) -> None:
        await asyncio.to_thread(self._put, key, entry, ttl_s)

    async def stats(self) -> CacheStats:
        return await asyncio.to_thread(self._stats)

    async def clear(self, older_than_s: float | None = None) -> int:
        return await asyncio.to_thread(self._clear, older_than_s)

    async def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # a lost entry costs one call, not money
            if not self._ready:
                conn.executescript(_SQLITE_SCHEMA)
                self._ready = True
            self._local.conn = conn
        return conn

    def _get(self, key: str) -> CachedReply | None:
        conn = self._conn()
        row = conn.execute("SELECT value FROM entries WHERE key = ? AND expires_at > ?",
                           (key, time.time())).fetchone()
        entry = CachedReply.model_validate_json(row[0]) if row else None
        with conn:
            _bump(conn, "lookups", 1)
            if entry is not None:
                _bump(conn, "hits", 1)
                _bump(conn, "saved_usd", entry.cost_usd)
        return entry

    def _put(self, key: str, entry: CachedReply, ttl_s: float) -> None:
        with self._conn() as conn:
            conn.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)",
                         (key, entry.model_dump_json(), entry.stored_at,
                          entry.stored_at + ttl_s))

    def _stats(self) -> CacheStats:
        conn = self._conn()
        entries = conn.execute("SELECT COUNT(*) FROM entries WHERE expires_at > ?",
                               (time.time(),)).fetchone()[0]
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return CacheStats(url=self.url, entries=entries,
                          lookups=int(counters.get("lookups", 0)),
                          hits=int(counters.get("hits", 0)),
                          saved_usd=Decimal(counters.get("saved_usd", 0)))

    def _clear(self, older_than_s: float | None) -> int:
        now = time.time()
        with self._conn() as conn:
            if older_than_s is None:
                removed = conn.execute("DELETE FROM entries").rowcount
                conn.execute("DELETE FROM counters")
            else:
                removed = conn.execute("DELETE FROM entries WHERE stored_at < ? OR "
                                       "expires_at <= ?", (now - older_than_s, now)).rowcount
        return removed


def _bump(conn: sqlite3.Connection, name: str, amount: int | Decimal) -> None:
    """Add ``amount`` to a counter (decimal text, so saved USD stays exact)."""
    row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    total = Decimal(row[0]) + Decimal(amount) if row else Decimal(amount)
    conn.execute("INSERT OR REPLACE INTO counters VALUES (?, ?)", (name, str(total)))


class RedisStore:
    """Entries as Redis strings with ``EX`` lifetimes; counters in one hash."""

    def __init__(self, url: str) -> None:
        try:
            from redis import asyncio as aioredis
        except ImportError:
            raise ConfigError(f"response cache URL {_masked(url)!r} needs the redis package: "
                              "pip install 'raytroupe[redis]'") from None
        self.url = _masked(url)
        self._client: Any = aioredis.from_url(url)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"

    async def get(self, key: str) -> CachedReply | None:
        raw = await self._client.get(_REDIS_PREFIX + key)
        entry = CachedReply.model_validate_json(raw) if raw is not None else None
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hincrby(_REDIS_STATS, "lookups", 1)
            if entry is not None:
                pipe.hincrby(_REDIS_STATS, "hits", 1)
                pipe.hincrby(_REDIS_STATS, "saved_pusd", int(entry.cost_usd * _PICO))
            await pipe.execute()
        return entry

    async def put(self, key: str, entry: CachedReply, ttl_s: float) -> None:
        await self._client.set(_REDIS_PREFIX + key, entry.model_dump_json(),
                               ex=max(1, round(ttl_s)))

    async def stats(self) -> CacheStats:
        entries = 0
        async for _key in self._client.scan_iter(match=_REDIS_PREFIX + "*", count=1000):
            entries += 1
        counters = {k.decode(): int(v) for k, v in
                    (await self._client.hgetall(_REDIS_STATS)).items()}
        return CacheStats(url=self.url, entries=entries, lookups=counters.get("lookups", 0),
                          hits=counters.get("hits", 0),
                          saved_usd=Decimal(counters.get("saved_pusd", 0)) / _PICO)

    async def clear(self, older_than_s: float | None = None) -> int:
        cutoff = None if older_than_s is None else time.time() - older_than_s
        removed = 0
        async for key in self._client.scan_iter(match=_REDIS_PREFIX + "*", count=1000):
            if cutoff is not None:
                raw = await self._client.get(key)
                if raw is None or CachedReply.model_validate_json(raw).stored_at >= cutoff:
                    continue
            removed += await self._client.delete(key)
        if older_than_s is None:
            await self._client.delete(_REDIS_STATS)
        return removed

    async def close(self) -> None:
        await self._client.aclose()


def _masked(url: str) -> str:
    """The URL without a password (``redis://:secret@host`` -> ``redis://***@host``)."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"

