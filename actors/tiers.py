"""Model tiers and the one price table.

The emulator bills from this table, the Ledger prices every record from it and budgets reserve
from it, so a price lives in one place: ``tiers.toml`` beside this module, optionally merged
with a user's own TOML file (``RAYTROUPE_PRICE_TABLE``).

Example:
    >>> table = load_price_table()
    >>> table.model_for("haiku")
    'claude-haiku-5-5'
    >>> table.spec("claude-haiku-5-5").cost_usd(input_tokens=1_000_000, output_tokens=0)
    Decimal('0.10')
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from actors.errors import ConfigError

Tier = Literal["haiku", "sonnet", "opus"]
"""The three model tiers an agent can be given."""

TIERS: tuple[Tier, ...] = get_args(Tier)
_MTOK = Decimal(1_000_000)
_PRICE = Field(ge=0, allow_inf_nan=False)
"""A price is a finite, non-negative number: a negative one would pay the user for calls."""
_CACHE_PRICE = Field(default=None, ge=0, allow_inf_nan=False)


class ModelSpec(BaseModel):
    """Prices (USD per million tokens) and limits of one model id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tier: Tier
    """The tier whose rate limits this model shares (the API's "model class")."""
    input: Decimal = _PRICE
    """Uncached input tokens."""
    output: Decimal = _PRICE
    """Output tokens (thinking included)."""
    cache_write_5m: Decimal | None = _CACHE_PRICE
    """Tokens written to the 5-minute prompt cache; default 1.25 x input."""
    cache_write_1h: Decimal | None = _CACHE_PRICE
    """Tokens written to the 1-hour prompt cache; default 2 x input."""
    cache_read: Decimal | None = _CACHE_PRICE
    """Tokens read from the prompt cache; default 0.1 x input."""
    context_window: int = Field(gt=0)
    """Largest prompt (all input tokens) the model accepts."""
    max_output_tokens: int = Field(gt=0)
    """Largest ``max_tokens`` the model accepts."""
    min_cacheable_tokens: int = Field(ge=0)
    """Shortest prefix the prompt cache will store; shorter ones are processed uncached."""

    @model_validator(mode="after")
    def _derive_cache_prices(self) -> ModelSpec:
        """Fill unset cache prices from the documented multipliers of the input price."""
        for name, factor in (("cache_write_5m", "1.25"), ("cache_write_1h", "2"),
                             ("cache_read", "0.1")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.input * Decimal(factor))
        return self

    def cost_usd(
        self,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_write_5m: int = 0,
        cache_write_1h: int = 0,
        cache_read: int = 0,
        batch_discount: Decimal | None = None,
    ) -> Decimal:
        """Price one call's usage.

        Args:
            input_tokens: Uncached input tokens (the API's ``usage.input_tokens``).
            output_tokens: Output tokens.
            cache_write_5m: Tokens written with a 5-minute TTL.
            cache_write_1h: Tokens written with a 1-hour TTL.
            cache_read: Tokens read from the cache.
            batch_discount: The fraction taken off for Message Batches (0.5), or None.

        Returns:
            The exact cost in USD.
        """
        assert self.cache_write_5m is not None and self.cache_write_1h is not None
        assert self.cache_read is not None
        total = (
            self.input * input_tokens
            + self.output * output_tokens
            + self.cache_write_5m * cache_write_5m
            + self.cache_write_1h * cache_write_1h
            + self.cache_read * cache_read
        ) / _MTOK
        if batch_discount is not None:
            total *= Decimal(1) - batch_discount
        return total


class PriceTable(BaseModel):
    """Tier -> default model, and model id -> :class:`ModelSpec`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_discount: Decimal = Field(default=Decimal("0.5"), ge=0, le=1, allow_inf_nan=False)
    """Fraction of input and output prices taken off for Message Batches."""
    tiers: dict[Tier, str]
    """The model each tier uses unless an agent names another."""
    models: dict[str, ModelSpec]
    """Every model id the runtime can price."""

    @model_validator(mode="after")
    def _tiers_name_known_models(self) -> PriceTable:
        for tier, model in self.tiers.items():
            if model not in self.models:
                raise ValueError(f"tier {tier!r} names model {model!r}, which has no prices")
        return self

    def model_for(self, tier: str) -> str:
        """Return the default model id of ``tier``; raise ``ValueError`` naming the choices."""
        try:
            return self.tiers[tier]  # type: ignore[index]
        except KeyError:
            raise ValueError(
                f"unknown tier {tier!r}: choose one of {', '.join(self.tiers)}"
            ) from None

    def spec(self, model: str) -> ModelSpec:
        """Return the spec of ``model`` (a model id, or a tier name); ``KeyError`` if unknown."""
        if model in self.tiers:
            model = self.tiers[model]  # type: ignore[index]
        try:
            return self.models[model]
        except KeyError:
            raise KeyError(
                f"model {model!r} is not in the price table; known: {', '.join(self.models)}"
            ) from None

    def tier_of(self, model: str) -> Tier:
        """Return the rate-limit class (tier) that ``model`` belongs to."""
        return self.spec(model).tier


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge two TOML documents key by key, override winning, tables merged recursively."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@lru_cache(maxsize=8)
def load_price_table(path: str | Path | None = None) -> PriceTable:
    """Load the shipped table, merged with the user's TOML file at ``path`` if given.

    Raises:
        ConfigError: the user's file is missing, unreadable, not valid TOML or not a valid
            table (a price that is not a finite number >= 0, say); the one-line message names
            the file and the bad field. (A ``ValueError``, as before.)
    """
    shipped = tomllib.loads(resources.files("actors").joinpath("tiers.toml").read_text())
    if path is None:
        return PriceTable.model_validate(shipped)
    path = Path(path)
    try:
        override = tomllib.loads(path.read_text(encoding="utf-8"))
        return PriceTable.model_validate(_merge(shipped, override))
    except FileNotFoundError:
        raise ConfigError(f"price table {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"price table {path} is a directory, not a TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"price table {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"price table {path} is not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"price table {path}: {_one_line(exc)}") from None
    except ValueError as exc:  # a model validator's own check (a tier naming no model)
        raise ConfigError(f"price table {path}: {exc}") from None


def _one_line(error: ValidationError) -> str:
    """Each problem as ``field.path: message (got value)``, joined on one line."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(map(str, problem["loc"]))
        message = str(problem["ctx"]["error"]) if problem["type"] == "value_error" \
            else problem["msg"]
        given = problem["input"]
        got = f" (got {given!r})" if isinstance(given, str | int | float) else ""
        problems.append(f"{where}: {message}{got}" if where else message)
    return "; ".join(problems)
