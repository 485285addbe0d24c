"""Reading rows out of the rich tables the CLI prints (shared by the CLI tests)."""

from __future__ import annotations


def row(output: str, key: str) -> list[str]:
    """The cells of the first table row whose first cell is ``key``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0] == key:
            return cells
    raise AssertionError(f"no row {key!r} in:\n{output}")
