"""A user's price table (``RAYTROUPE_PRICE_TABLE``) that is wrong fails with one clear line.

A bad table must never be used: every bill, budget and emulator charge is priced from it, and
a negative price would let a run spend past its budget while the Ledger counts money back.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from actors.errors import ConfigError
from actors.tiers import load_price_table


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "message"), [
    ('[models."claude-haiku-5-5"]\ninput = "free"\n',
     'models.claude-haiku-5-5.input: Input should be a valid decimal (got \'free\')'),
    ('[models."claude-haiku-5-5"]\ninput = -0.10\n',
     "models.claude-haiku-5-5.input: Input should be greater than or equal to 0 (got -0.1)"),
    ('[models."claude-haiku-5-5"]\ncache_read = -1\n',
     "models.claude-haiku-5-5.cache_read: Input should be greater than or equal to 0"),
    ('[models."claude-haiku-5-5"]\noutput = nan\n',
     "models.claude-haiku-5-5.output: Input should be a finite number"),
    ("batch_discount = 1.5\n", "batch_discount: Input should be less than or equal to 1"),
    ('[tiers]\nhaiku = "claude-nope"\n', "tier 'haiku' names model 'claude-nope'"),
    ("input = = 3\n", "is not valid TOML: Invalid value (at line 1, column 9)"),
])
def test_a_bad_table_is_refused_naming_the_file_and_the_field(
        tmp_path: Path, text: str, message: str) -> None:
    path = _table(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_price_table(path)
    assert str(caught.value).startswith(f"price table {path}")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_or_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^price table .*nowhere\.toml: no such file$"):
        load_price_table(tmp_path / "nowhere.toml")
    with pytest.raises(ConfigError, match=r"is a directory, not a TOML file$"):
        load_price_table(tmp_path)


def test_a_good_override_is_merged_field_by_field(tmp_path: Path) -> None:
    table = load_price_table(_table(tmp_path, '[models."claude-haiku-5-5"]\ninput = 0.25\n'))
    spec = table.spec("haiku")
    assert (spec.input, spec.output, spec.cache_read) == (
        Decimal("0.25"), Decimal("0.5"), Decimal("0.025"))
