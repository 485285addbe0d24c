"""``topologies`` sits below ``cluster``: it takes the runtime it runs on and never imports
``cluster``, so the import graph goes one way (``cluster`` -> ``topologies`` -> ``actors``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported(path: Path) -> Iterator[str]:
    """Every absolute module a file imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_topologies_module_imports_cluster() -> None:
    offenders = sorted(f"{path.name}: {module}" for path in (ROOT / "topologies").glob("*.py")
                       for module in _imported(path) if module.split(".")[0] == "cluster")
    assert offenders == []


def test_every_architecture_loads_without_loading_cluster() -> None:
    code = ("import sys, topologies, topologies.mapreduce, topologies.pipeline; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cluster'))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
