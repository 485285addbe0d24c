"""Map-reduce inputs: what is read, what is skipped (and why), and that nothing can hang or escape.

No Ray here: reading a corpus is plain file handling, checked case by case on a temporary tree.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from topologies.corpus import CorpusLimits, load_corpus

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _reasons(corpus: object) -> dict[str, str]:
    return {Path(s.path).name: s.reason for s in corpus.skipped}  # type: ignore[attr-defined]


def test_a_plain_string_is_the_text_itself() -> None:
    corpus = load_corpus("The river rose seven feet.")
    assert [(d.source, d.text) for d in corpus.documents] == [("<text>",
                                                                "The river rose seven feet.")]
    assert corpus.skipped == ()


def test_the_shipped_corpus_reads_its_documents_and_lists_the_two_odd_files() -> None:
    corpus = load_corpus([REPO / "examples" / "corpus"])
    names = [Path(d.source).name for d in corpus.documents]
    assert len(names) == 12 and names == sorted(names)
    assert _reasons(corpus) == {"harbour-map.png": "binary (NUL bytes)",
                                "letter-latin1.txt": "not UTF-8 text (byte 15)"}


def test_a_folder_is_walked_files_first_then_subfolders_not_hidden_ones(tmp_path: Path) -> None:
    _write(tmp_path / "b.txt", "bee")
    _write(tmp_path / "a" / "z.md", "zed")
    _write(tmp_path / ".git" / "config", "secret-ish")
    _write(tmp_path / ".env", "KEY=1")
    corpus = load_corpus([tmp_path])
    assert [Path(d.source).relative_to(tmp_path).as_posix() for d in corpus.documents] == \
        ["b.txt", "a/z.md"]
    assert corpus.skipped == ()


def test_symlinks_out_of_the_root_are_skipped_and_inside_ones_read_once(tmp_path: Path) -> None:
    outside = _write(tmp_path / "outside" / "secret.txt", "do not read")
    root = tmp_path / "root"
    real = _write(root / "notes.txt", "notes")
    (root / "leak.txt").symlink_to(outside)
    (root / "alias.txt").symlink_to(real)
    (root / "linked-dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    corpus = load_corpus([root])
    assert [d.text for d in corpus.documents] == ["notes"]
    assert _reasons(corpus) == {"leak.txt": "resolves outside its root (symlink or '..')",
                                "linked-dir": "symlinked folder not followed"}


def test_a_fifo_and_a_device_are_skipped_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    _write(tmp_path / "ok.txt", "fine")
    corpus = load_corpus([tmp_path, "/dev/zero"])
    assert [d.text for d in corpus.documents] == ["fine"]
    assert _reasons(corpus) == {"pipe": "not a regular file", "zero": "not a regular file"}


@pytest.mark.parametrize(("files", "limits", "expected"), [
    ({"big.txt": "x" * 101}, CorpusLimits(max_file_bytes=100),
     {"big.txt": "larger than the 100-byte cap"}),
    ({"a.txt": "a" * 60, "b.txt": "b" * 60}, CorpusLimits(max_total_bytes=100),
     {"b.txt": "total-size cap reached"}),
    ({"empty.txt": "  \n"}, CorpusLimits(), {"empty.txt": "empty"}),
    ({"nul.txt": b"text\x00more"}, CorpusLimits(), {"nul.txt": "binary (NUL bytes)"}),
    ({"latin.txt": "caf\xe9".encode("latin-1")}, CorpusLimits(),
     {"latin.txt": "not UTF-8 text (byte 3)"}),
])
def test_caps_and_odd_contents_are_listed_not_fatal(
        tmp_path: Path, files: dict[str, str | bytes], limits: CorpusLimits,
        expected: dict[str, str]) -> None:
    for name, data in files.items():
        _write(tmp_path / name, data)
    corpus = load_corpus([tmp_path], limits=limits)
    assert _reasons(corpus) == expected
    assert len(corpus.documents) == len(files) - len(expected)


def test_the_file_count_cap_stops_the_walk_with_one_line(tmp_path: Path) -> None:
    for i in range(5):
        _write(tmp_path / f"{i}.txt", str(i))
    corpus = load_corpus([tmp_path], limits=CorpusLimits(max_files=3))
    assert [d.text for d in corpus.documents] == ["0", "1", "2"]
    assert [s.reason for s in corpus.skipped] == \
        ["file-count cap of 3 reached; the rest was not read"]


def test_globs_stay_under_their_base_and_say_when_nothing_matches(tmp_path: Path) -> None:
    _write(tmp_path / "docs" / "a.md", "alpha")
    _write(tmp_path / "docs" / "sub" / "b.md", "beta")
    _write(tmp_path / "private" / "c.md", "gamma")
    corpus = load_corpus([f"{tmp_path}/docs/**/*.md", f"{tmp_path}/docs/*/../../private/*.md",
                          f"{tmp_path}/docs/*.rst"])
    assert sorted(d.text for d in corpus.documents) == ["alpha", "beta"]
    assert [(Path(s.path).name, s.reason) for s in corpus.skipped] == [
        ("c.md", "resolves outside its root (symlink or '..')"),
        ("*.rst", "no file matches")]


def test_a_global_root_confines_every_argument(tmp_path: Path) -> None:
    inside = _write(tmp_path / "in" / "a.txt", "inside")
    outside = _write(tmp_path / "out" / "b.txt", "outside")
    corpus = load_corpus([inside, outside], root=tmp_path / "in")
    assert [d.text for d in corpus.documents] == ["inside"]
    assert _reasons(corpus) == {"b.txt": "resolves outside its root (symlink or '..')"}


def test_a_missing_path_is_listed() -> None:
    corpus = load_corpus(["no/such/thing.txt"])
    assert corpus.documents == () and _reasons(corpus) == {"thing.txt": "not found"}
