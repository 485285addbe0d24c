"""docs/configuration.md stays in step with the Settings model."""

from __future__ import annotations

from pathlib import Path

from cluster.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in text]
    assert not missing, f"document these settings in {DOC.name}: {missing}"
