"""The response cache's stores, SQLite and a real ``redis-server``, through the same calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors.errors import ConfigError
from actors.messages import TextBlock, Usage
from actors.response_cache import CachedReply, cache_key, parse_ttl
from actors.response_cache_stores import CacheStore, open_store
from tests.actors.redis_server import running_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        asyncio.run(_clear(url))
        return url
    return f"sqlite:///{tmp_path / 'response_cache.sqlite'}"


async def _clear(url: str) -> None:
    store = open_store(url)
    await store.clear()
    await store.close()


def _entry(cost: str = "0.0125", stored_at: float | None = None) -> CachedReply:
    return CachedReply(model="claude-haiku-5-5", content=(TextBlock(text="Hello."),),
                       stop_reason="end_turn", usage=Usage(input_tokens=120, output_tokens=30),
                       cost_usd=Decimal(cost), stored_at=stored_at or time.time())


async def _round_trip(store: CacheStore) -> None:
    assert await store.get("k1") is None
    await store.put("k1", _entry(), ttl_s=3600)
    await store.put("old", _entry(stored_at=time.time() - 8 * 86_400), ttl_s=30 * 86_400)
    hit = await store.get("k1")
    assert hit is not None and hit == _entry(stored_at=hit.stored_at)
    await store.get("k1")
    stats = await store.stats()
    assert (stats.entries, stats.lookups, stats.hits) == (2, 3, 2)
    assert stats.saved_usd == Decimal("0.025") and stats.hit_rate == pytest.approx(2 / 3)
    assert await store.clear(older_than_s=parse_ttl("7d")) == 1
    assert (await store.stats()).entries == 1
    assert await store.clear() == 1
    assert (await store.stats()).lookups == 0


def test_a_store_keeps_replies_counts_hits_and_clears_by_age(store_url: str) -> None:
    async def scenario() -> None:
        store = open_store(store_url)
        try:
            await _round_trip(store)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_an_entry_expires_after_its_ttl(store_url: str) -> None:
    async def scenario() -> None:
        store = open_store(store_url)
        try:
            await store.put("short", _entry(), ttl_s=1)
            assert await store.get("short") is not None
            await asyncio.sleep(2.1)
            assert await store.get("short") is None
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_key_ignores_prompt_cache_marks_and_separates_accounts() -> None:
    plain = {"model": "m", "system": [{"type": "text", "text": "Rules."}],
             "messages": [{"role": "user", "content": "hi"}]}
    marked = {**plain, "system": [{"type": "text", "text": "Rules.",
                                   "cache_control": {"type": "ephemeral"}}]}
    assert cache_key(plain, "acct-a") == cache_key(marked, "acct-a")
    assert cache_key(plain, "acct-a") != cache_key(plain, "acct-b")
    assert cache_key(plain, "acct-a") != cache_key({**plain, "max_tokens": 5}, "acct-a")


def test_bad_urls_and_ttls_are_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="use sqlite:///PATH or redis://"):
        open_store("memcached://localhost")
    for text in ("", "7", "3y", "-1h", "0d"):
        with pytest.raises(ValueError, match="cache TTL"):
            parse_ttl(text)
    assert parse_ttl("90s") == 90 and parse_ttl("1.5h") == 5400 and parse_ttl("2w") == 1_209_600
