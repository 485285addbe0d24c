"""Run a command under a pseudo-terminal of a given size and read back what a person would see.

The child gets a real TTY (so rich draws its live progress bar, colours and all) of ``columns``
x ``rows``; everything it writes goes through ``pyte``, a VT100 emulator, so the result is the
final screen, cursor movements and redraws applied, not the raw byte stream.

Example:
    >>> screen = run_on_screen(["raytroupe", "ledger"], columns=80)   # doctest: +SKIP
    >>> screen.exit_code, screen.lines[0]                             # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from dataclasses import dataclass

import pyte


@dataclass(frozen=True)
class Screen:
    """The final screen (trailing blanks stripped, empty lines at the end dropped)."""

    lines: list[str]
    exit_code: int

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run_on_screen(argv: list[str], *, columns: int = 80, rows: int = 400,
                  env: dict[str, str] | None = None, cwd: str | None = None,
                  timeout_s: float = 240.0) -> Screen:
    """Run ``argv`` on a ``columns`` x ``rows`` terminal; return its screen and exit code.

    ``rows`` is large so nothing scrolls off: the whole session stays readable.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    child_env = {**(env if env is not None else os.environ), "TERM": "xterm-256color",
                 "COLUMNS": str(columns), "LINES": str(rows)}
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                               env=child_env, start_new_session=True, close_fds=True)
    os.close(slave)
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            stream.feed(data)
        else:
            process.kill()
            raise TimeoutError(f"{argv[0]} still running after {timeout_s} s")
        code = process.wait(timeout=30)
    finally:
        os.close(master)
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(lines=lines, exit_code=code)
