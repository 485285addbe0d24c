"""Reading map-reduce inputs safely: a string, files, folders or globs, never anything else.

A corpus is what the mappers read. Paths come from users (and, through ``ray job submit``,
from whoever can submit jobs), so every file is resolved and kept under its root, opened
without blocking and without following a last-moment symlink, checked to be a regular file,
and capped in size (``docs/reliability.md`` §5: a FIFO blocks ``read()`` forever and
``/dev/zero`` never ends). Files that are binary, not UTF-8, too large, unreadable or outside
their root are *skipped and listed*, never fatal: one odd file must not sink a run over
thousands.

The root of an argument: a folder is its own root; a glob's root is the folder before its first
wildcard; a file named explicitly is trusted as named (its parent is its root). A global
``root`` (``--root`` on the CLI) additionally confines every argument. Hidden files and
folders (a leading ``.``, such as ``.git``) are not walked into.

Example:
    >>> corpus = load_corpus("A short text to map.")
    >>> [d.source for d in corpus.documents], corpus.skipped
    (['<text>'], ())
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field

from actors.frozen import Frozen as _Frozen

__all__ = ["Corpus", "CorpusInput", "CorpusLimits", "Document", "SkippedFile", "load_corpus"]

CorpusInput = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""What a map-reduce reads: a ``str`` is the text itself; a ``Path``, or a list of strings and
paths, names files, folders and globs."""

_SNIFF_BYTES = 8192
"""A NUL byte in the first 8 KiB marks a binary file (what ``git`` and ``grep`` check)."""
_TEXT_SOURCE = "<text>"




class CorpusLimits(_Frozen):
    """Caps that keep one run's input bounded, whatever the paths point at."""

    max_files: int = Field(default=10_000, gt=0)
    """Most files considered (read or skipped) per run; the rest are not looked at."""
    max_file_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    """Larger files are skipped (listed), not truncated: half a file would mislead."""
    max_total_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    """Files past this running total are skipped: the driver keeps the text in memory."""
    include_hidden: bool = False
    """Walk into files and folders whose name starts with ``.`` (``.git``, ``.env``)."""


class Document(_Frozen):
    """One text to map: where it came from, and its contents."""

    kind: Literal["document"] = "document"
    source: str
    """The path as the user would recognise it (argument + path under it), or ``<text>``."""
    text: str


class SkippedFile(_Frozen):
    """An input left out of the run, and why (shown in the result, never fatal)."""

    kind: Literal["skipped_file"] = "skipped_file"
    path: str
    reason: str


class Corpus(_Frozen):
    """The documents of a run, in a stable order, and the inputs that were skipped."""

    kind: Literal["corpus"] = "corpus"
    documents: tuple[Document, ...] = ()
    skipped: tuple[SkippedFile, ...] = ()

    @property
    def total_bytes(self) -> int:
        """UTF-8 bytes of all documents."""
        return sum(len(d.text.encode()) for d in self.documents)


def load_corpus(source: CorpusInput, *, limits: CorpusLimits | None = None,
                root: str | os.PathLike[str] | None = None) -> Corpus:
    """Read ``source`` into a :class:`Corpus`, skipping (and listing) what cannot be read.

    Args:
        source: A ``str`` is the text itself; a path, or a list of strings and paths, names
            files, folders and globs (``docs/**/*.md``).
        limits: Size and count caps (defaults: 10,000 files, 10 MiB each, 100 MiB in all).
        root: If given, every input must resolve under this folder.

    Returns:
        The documents (per argument: a folder's files by name, then its subfolders) and
        the skipped inputs.

    Example:
        >>> load_corpus(["no/such/folder"]).skipped[0].reason
        'not found'
    """
    limits = limits or CorpusLimits()
    if isinstance(source, str):
        return Corpus(documents=(Document(source=_TEXT_SOURCE, text=source),) if source else ())
    paths = [source] if isinstance(source, os.PathLike) else list(source)
    reader = _Reader(limits, Path(root).resolve() if root is not None else None)
    for arg in paths:
        reader.read_argument(os.fspath(arg))
    return Corpus(documents=tuple(reader.documents), skipped=tuple(reader.skipped))


class _Reader:
    """Walks the arguments once, enforcing the caps across all of them."""

    def __init__(self, limits: CorpusLimits, root: Path | None) -> None:
        self.limits, self.root = limits, root
        self.documents: list[Document] = []
        self.skipped: list[SkippedFile] = []
        self.seen: set[Path] = set()
        self.considered = 0
        self.total_bytes = 0
        self.capped = False

    def read_argument(self, arg: str) -> None:
        """Read one argument: a glob, a folder or a file."""
        if self.capped:
            return
        if glob.has_magic(arg):
            base = _glob_base(arg)
            # Folders a wildcard matches are not walked: ``**`` says "recurse" explicitly.
            matches = sorted(m for m in glob.iglob(arg, recursive=True,
                                                   include_hidden=self.limits.include_hidden)
                             if not os.path.isdir(m))
            if not matches:
                self._skip(arg, "no file matches")
            self._read_candidates(((Path(m), m) for m in matches), Path(base).resolve(), arg)
            return
        path = Path(arg)
        if not os.path.lexists(path):
            self._skip(arg, "not found")
        elif path.is_dir():
            top = path.resolve()
            self._read_candidates(self._walk(top, arg), top, arg)
        else:
            self._read_candidates(iter([(path, arg)]), path.resolve().parent, arg)

    def _walk(self, top: Path, shown: str) -> Iterator[tuple[Path, str]]:
        """Files under ``top`` in a stable order; symlinked folders are listed, not followed."""
        for folder, dirs, files in os.walk(top, followlinks=False):
            dirs.sort()
            for name in list(dirs):
                if self._hidden(name):
                    dirs.remove(name)
                elif os.path.islink(os.path.join(folder, name)):
                    dirs.remove(name)
                    rel = os.path.relpath(os.path.join(folder, name), top)
                    self._skip(os.path.join(shown, rel), "symlinked folder not followed")
            for name in sorted(files):
                if not self._hidden(name):
                    full = Path(folder, name)
                    yield full, os.path.join(shown, os.path.relpath(full, top))

    def _read_candidates(self, candidates: Iterator[tuple[Path, str]], base: Path,
                         arg: str) -> None:
        for path, shown in candidates:
            if self.considered >= self.limits.max_files:
                self.capped = True
                self._skip(arg, f"file-count cap of {self.limits.max_files:,} reached; "
                                "the rest was not read")
                return
            self.considered += 1
            self._read_one(path, shown, base)

    def _read_one(self, path: Path, shown: str, base: Path) -> None:
        real = path.resolve()
        if real in self.seen:
            return
        if not (_is_under(real, base) and (self.root is None or _is_under(real, self.root))):
            self._skip(shown, "resolves outside its root (symlink or '..')")
            return
        room = self.limits.max_total_bytes - self.total_bytes
        text_or_reason = read_text_file(real, max_bytes=self.limits.max_file_bytes,
                                        room=room)
        if isinstance(text_or_reason, _Skip):
            self._skip(shown, text_or_reason.reason)
            return
        self.seen.add(real)
        self.total_bytes += len(text_or_reason.encode())
        self.documents.append(Document(source=shown, text=text_or_reason))

    def _hidden(self, name: str) -> bool:
        return name.startswith(".") and not self.limits.include_hidden

    def _skip(self, path: str, reason: str) -> None:
        self.skipped.append(SkippedFile(path=path, reason=reason))


class _Skip:
    """Why a file was not read (a value, so the reader can list it and go on)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def read_text_file(path: Path, *, max_bytes: int, room: int | None = None) -> str | _Skip:
    """Read a regular UTF-8 text file of at most ``max_bytes``, or say why not.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; ``O_NOFOLLOW`` refuses a symlink
    swapped in after ``path`` was resolved; ``fstat`` on the open descriptor checks what was
    really opened, and the read stops one byte past the cap whatever ``st_size`` claimed.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return _Skip(f"unreadable: {exc.strerror or exc}")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return _Skip("not a regular file")
        if info.st_size > max_bytes:
            return _Skip(f"larger than the {max_bytes:,}-byte cap")
        data = _read_at_most(fd, max_bytes + 1)
    except OSError as exc:
        return _Skip(f"unreadable: {exc.strerror or exc}")
    finally:
        os.close(fd)
    return _decode(data, max_bytes, room)


def _read_at_most(fd: int, limit: int) -> bytes:
    parts, size = [], 0
    while size < limit:
        part = os.read(fd, min(1 << 20, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def _decode(data: bytes, max_bytes: int, room: int | None) -> str | _Skip:
    if len(data) > max_bytes:
        return _Skip(f"larger than the {max_bytes:,}-byte cap")
    if not data.strip():
        return _Skip("empty")
    if b"\x00" in data[:_SNIFF_BYTES]:
        return _Skip("binary (NUL bytes)")
    if room is not None and len(data) > room:
        return _Skip("total-size cap reached")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _Skip(f"not UTF-8 text (byte {exc.start})")


def _glob_base(pattern: str) -> str:
    """The folder before a pattern's first wildcard: the root its matches must stay under."""
    parts = Path(pattern).parts
    literal = []
    for part in parts:
        if glob.has_magic(part):
            break
        literal.append(part)
    return os.path.join(*literal) if literal else "."


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
