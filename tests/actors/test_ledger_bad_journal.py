"""A journal the Ledger cannot use fails once, with one line naming the file: no restart loop.

Before issue 12, a data dir that was a file or a truncated journal made the Ledger's
``__init__`` raise, Ray's report of it crash the worker, and Ray restart the Ledger into the
same failure forever (88 tracebacks in 120 s); its callers hung.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import ray
from ray.util.state import list_actors

from actors.errors import ConfigError
from actors.ledger import Ledger, get_ledger
from actors.ledger_journal import (
    JOURNAL_NAME,
    LedgerJournal,
    check_data_dir,
    read_entries,
    read_run_ids,
)
from actors.ledger_rollup import read_rollups
from tests.actors.ledger_fixtures import truncated_journal


def _corrupt(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / JOURNAL_NAME
    path.write_bytes(b"not a journal\n" * 200)
    return path


def test_a_data_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    message = f"the Ledger's data dir {afile} is a file, not a directory"
    with pytest.raises(ConfigError, match=message):
        Ledger(afile)
    with pytest.raises(ConfigError, match=message):
        check_data_dir(afile)
    with pytest.raises(ConfigError, match=f"data dir {afile / 'sub'} cannot be created"):
        Ledger(afile / "sub")
    assert afile.read_text() == "x"


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_journal_is_refused_by_every_reader_and_left_as_it_was(
        tmp_path: Path, damage: str) -> None:
    path = _corrupt(tmp_path) if damage == "corrupt" else truncated_journal(tmp_path)
    before = path.read_bytes()
    expected = f"the Ledger journal {path} is damaged"
    for read in (lambda: Ledger(tmp_path), lambda: check_data_dir(tmp_path),
                 lambda: read_run_ids(path), lambda: read_entries(path),
                 lambda: read_rollups(path, None, "agent")):
        with pytest.raises(ConfigError, match=expected):
            read()
    assert path.read_bytes() == before  # nothing was "repaired" away


def test_a_missing_data_dir_is_fine_and_not_created_by_the_check(tmp_path: Path) -> None:
    check_data_dir(tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_an_unknown_sync_level_is_refused(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYTROUPE_LEDGER_SYNC", "FULL; DROP TABLE calls")
    with pytest.raises(ConfigError, match="RAYTROUPE_LEDGER_SYNC='FULL; DROP TABLE CALLS'"):
        LedgerJournal(tmp_path / JOURNAL_NAME)


@pytest.mark.parametrize("damage", ["data dir is a file", "truncated"])
def test_the_ledger_actor_fails_once_and_says_why(ray_session: None, tmp_path: Path,
                                                  damage: str) -> None:
    if damage == "truncated":
        data_dir, message = tmp_path, "is damaged (database disk image is malformed)"
        truncated_journal(tmp_path)
    else:
        data_dir, message = tmp_path / "afile", "is a file, not a directory"
        data_dir.write_text("x")
    namespace = f"bad-journal-{uuid.uuid4().hex[:6]}"
    ledger = get_ledger(data_dir=data_dir, namespace=namespace)
    started = time.monotonic()
    with pytest.raises(ray.exceptions.ActorDiedError) as died:
        ray.get(ledger.budget.remote("r1"), timeout=60)
    assert time.monotonic() - started < 30
    assert "error raised in its creation task" in str(died.value)
    assert message in str(died.value)
    gcs = ray.get_runtime_context().gcs_address
    [actor] = list_actors(address=gcs, filters=[("ray_namespace", "=", namespace)], detail=True)
    assert (actor.state, actor.num_restarts) == ("DEAD", 0)
