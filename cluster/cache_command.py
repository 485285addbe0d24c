"""``raytroupe cache stats`` / ``raytroupe cache clear [--older-than 7d]``: the response cache.

Works on the store directly (no Ray): the SQLite file in ``--data-dir`` by default, or the
store ``--url`` / ``RAYTROUPE_CACHE_URL`` names (``redis://host:6379/0``).

Example:
    raytroupe cache stats
    raytroupe cache clear --older-than 7d
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from actors.errors import UsageError

cache_app = typer.Typer(name="cache", no_args_is_help=True, add_completion=False)

DataDir = Annotated[Path, typer.Option(
    "--data-dir", envvar="RAYTROUPE_DATA_DIR",
    help="Directory holding the SQLite store (response_cache.sqlite).")]
Url = Annotated[str | None, typer.Option(
    "--url", envvar="RAYTROUPE_CACHE_URL",
    help="The store: sqlite:///PATH or redis://HOST:PORT/DB (default: the data dir's file).")]


@cache_app.command("stats")
def stats(data_dir: DataDir = Path(".raytroupe"), url: Url = None) -> None:
    """Print the entries, lookups, hit rate and USD saved by the response cache."""
    found = asyncio.run(_with_store(_url(data_dir, url), lambda store: store.stats()))
    rate = "-" if found.hit_rate is None else f"{found.hit_rate:.1%}"
    typer.echo(f"store: {found.url}")
    typer.echo(f"entries: {found.entries:,}  lookups: {found.lookups:,}  hits: {found.hits:,}  "
               f"hit rate: {rate}  saved: ${found.saved_usd:.6f}")


@cache_app.command("clear")
def clear(
    data_dir: DataDir = Path(".raytroupe"), url: Url = None,
    older_than: Annotated[str | None, typer.Option(
        "--older-than", help="Only entries stored longer ago than this (90s, 15m, 1h, 7d, 2w); "
                             "without it, every entry and the counters.")] = None,
) -> None:
    """Remove cached replies (all of them, or those older than --older-than)."""
    from actors.response_cache import parse_ttl

    try:
        age = None if older_than is None else parse_ttl(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    removed = asyncio.run(_with_store(_url(data_dir, url), lambda store: store.clear(age)))
    typer.echo(f"removed {removed:,} cached repl{'y' if removed == 1 else 'ies'}")


def _url(data_dir: Path, url: str | None) -> str:
    from actors.response_cache import CACHE_FILE

    if url:
        return url
    path = data_dir / CACHE_FILE
    if not path.is_file():
        raise UsageError(f"no response cache at {path}: nothing cached yet, or pass --data-dir "
                         "or --url")
    return f"sqlite:///{path.resolve()}"


async def _with_store(url: str, action: Any) -> Any:
    """Open the store, run ``action`` on it, close it; a store that cannot answer is one line."""
    from actors.errors import RaytroupeError
    from actors.response_cache_stores import open_store

    store = open_store(url)
    try:
        return await action(store)
    except RaytroupeError:
        raise
    except Exception as exc:
        raise RaytroupeError(f"response cache at {store.url} did not answer: "
                             f"{type(exc).__name__}: {exc}") from None
    finally:
        await store.close()
