"""``raytroupe cache stats`` / ``clear``: read and prune the SQLite store without Ray."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from actors.messages import TextBlock, Usage
from actors.response_cache import CACHE_FILE, CachedReply
from actors.response_cache_stores import open_store
from cluster.cli import build_app
from tests.actors.redis_server import running_redis

app = build_app()


def _fill(data_dir: Path) -> None:
    async def fill() -> None:
        store = open_store(f"sqlite:///{data_dir / CACHE_FILE}")
        for i, age_days in enumerate((0, 1, 10)):
            entry = CachedReply(model="claude-haiku-5-5", content=(TextBlock(text="hi"),),
                                usage=Usage(input_tokens=10), cost_usd=Decimal("0.002"),
                                stored_at=time.time() - age_days * 86_400)
            await store.put(f"k{i}", entry, ttl_s=30 * 86_400)
        for key in ("k0", "k0", "k1", "missing"):
            await store.get(key)
        await store.close()

    asyncio.run(fill())


def _cache(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["cache", *args])
    return result.exit_code, result.stdout, result.stderr


def test_stats_show_entries_hit_rate_and_usd_saved(tmp_path: Path) -> None:
    _fill(tmp_path)
    code, out, _ = _cache("stats", "--data-dir", str(tmp_path))
    assert code == 0
    assert "entries: 3  lookups: 4  hits: 3  hit rate: 75.0%  saved: $0.006000" in out


def test_clear_older_than_keeps_recent_entries(tmp_path: Path) -> None:
    _fill(tmp_path)
    assert _cache("clear", "--data-dir", str(tmp_path), "--older-than", "7d")[:2] == \
        (0, "removed 1 cached reply\n")
    assert "entries: 2 " in _cache("stats", "--data-dir", str(tmp_path))[1]
    assert _cache("clear", "--data-dir", str(tmp_path))[1] == "removed 2 cached replies\n"


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = _cache("stats", "--data-dir", str(tmp_path))
    assert (code, out) == (2, "") and err.startswith("error: no response cache at ")
    _fill(tmp_path)
    code, _, err = _cache("clear", "--data-dir", str(tmp_path), "--older-than", "7 days")
    assert code == 2 and "--older-than: cache TTL '7 days'" in err and "Traceback" not in err
    code, _, err = _cache("stats", "--url", "ftp://cache")
    assert code == 2 and "use sqlite:///PATH or redis://" in err


def test_stats_and_clear_reach_a_redis_store(tmp_path: Path) -> None:
    with running_redis(tmp_path) as url:
        async def fill() -> None:
            store = open_store(url)
            await store.put("k", CachedReply(model="claude-haiku-5-5",
                                             cost_usd=Decimal("0.5")), ttl_s=60)
            await store.get("k")
            await store.close()

        asyncio.run(fill())
        code, out, _ = _cache("stats", "--url", url)
        assert code == 0 and "entries: 1  lookups: 1  hits: 1  hit rate: 100.0%  saved: " \
            "$0.500000" in out
        assert _cache("clear", "--url", url)[:2] == (0, "removed 1 cached reply\n")
