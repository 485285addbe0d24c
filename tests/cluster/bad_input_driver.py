"""Run ``raytroupe`` (its console-script entry, ``cluster.cli.main``) once per case, in one process.

Reads a JSON list of ``{"args": [...], "env": {...}}`` on stdin and prints a JSON list of
``{"code", "stderr", "crashed", "ray_started"}``. One process serves every case because
starting Python and importing the CLI is most of a case's cost. ``ray_started`` is whether
``$RAY_TMPDIR`` exists after the case: Ray creates it when it starts, so a bad input that
reached Ray shows there even though the command stops Ray again before it returns (it is
removed after each case, so the next case starts clean).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any


def run_case(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``raytroupe ARGS`` with ``env`` added to the environment; report what the user saw."""
    from cluster.cli import main

    saved = dict(os.environ)
    os.environ.update(env)
    sys.argv = ["raytroupe", *args]
    err, code, crashed = io.StringIO(), 0, None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # a traceback the user would have seen
        crashed = f"{type(exc).__name__}: {exc}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
    ray_tmp = Path(os.environ["RAY_TMPDIR"])
    started = ray_tmp.exists()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return {"code": code, "stderr": err.getvalue(), "crashed": crashed, "ray_started": started}


if __name__ == "__main__":
    cases = json.load(sys.stdin)
    print(json.dumps([run_case(case["args"], case["env"]) for case in cases]))
