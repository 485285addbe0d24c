"""The README's example runs as shown (offline, in its own process and its own Ray)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_shows_the_example_file_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "examples" / "research_session.py").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S)
    assert block is not None
    body = example.split('"""', 2)[2].strip().replace('if __name__ == "__main__":\n    ', "")
    assert block.group(1).strip() == body


@pytest.mark.slow
def test_the_readme_example_runs_offline_and_prints_costs_per_agent() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["RAY_ADDRESS"] = "local"  # a Ray of its own, whatever else runs on the machine
    result = subprocess.run([sys.executable, "examples/research_session.py"], cwd=ROOT,
                            env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"\d+ tokens, \$\d+\.\d{6}", result.stdout)
    assert "synthesizer: $" in result.stdout and "researcher_1: $" in result.stdout
