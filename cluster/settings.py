"""Runtime settings, read from the environment (and a ``.env`` file) by pydantic-settings.

The API key is a ``SecretStr``: its repr and str are masked, and nothing in raytroupe calls
``get_secret_value()`` except the one place that builds an Anthropic client.

Example:
    >>> s = Settings(_env_file=None)
    >>> s.uses_emulator
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from actors.errors import ConfigError
from actors.ledger_journal import check_data_dir
from actors.tiers import load_price_table
from cluster.settings_checks import check_api_key, check_base_url, settings_error

EmulatorProfile = Literal["fast", "realistic"]


class Settings(BaseSettings):
    """Everything raytroupe reads from the environment.

    ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` keep the SDK's own names; everything else
    is prefixed ``RAYTROUPE_`` (``RAYTROUPE_RPM=50``).
    """

    model_config = SettingsConfigDict(
        env_prefix="RAYTROUPE_", env_file=".env", extra="ignore", frozen=True
    )

    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    """The real API key. Unset: everything runs against the local emulator."""
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    """Where the API lives; set by the runtime to the emulator's URL when offline."""
    emulator_profile: EmulatorProfile = "fast"
    """Latency of the offline emulator: ``fast`` (milliseconds) or ``realistic`` (seconds)."""
    rpm: int = Field(default=4_000, gt=0)
    """Requests per minute per model tier, cluster-wide (the API's default for a Scale org)."""
    itpm: int = Field(default=2_000_000, gt=0)
    """Input tokens per minute per model tier (uncached input + cache writes)."""
    otpm: int = Field(default=400_000, gt=0)
    """Output tokens per minute per model tier."""
    max_concurrency: int = Field(default=64, gt=0)
    """Requests in flight at once per model tier, cluster-wide."""
    data_dir: Path = Path(".raytroupe")
    """Where the Ledger journal, chunk results and caches live."""
    price_table: Path | None = None
    """A TOML file merged over the shipped price table (see ``actors/tiers.toml``)."""
    cache_url: str | None = None
    """The response cache's store: ``redis://host:6379/0`` for a cluster; unset, a SQLite file
    in the data dir (``response_cache.sqlite``). Agents cache only when asked
    (``AgentSpec(cache="on")``); see ``docs/configuration.md``."""
    cache_shared: bool = False
    """Let API keys share response-cache entries (default: an entry serves only its own key)."""
    cache: bool = False
    """Answer repeated requests from the response cache, for every agent that does not say."""
    cache_ttl: str = "1d"
    """How long those cached replies live (``90s``, ``1h``, ``7d``, ``2w``)."""

    @field_validator("cache_ttl")
    @classmethod
    def _known_ttl(cls, value: str) -> str:
        """An unknown unit is refused when the settings are read, before any call."""
        from actors.response_cache import parse_ttl

        parse_ttl(value)
        return value

    def response_cache_url(self) -> str:
        """``cache_url``, or the SQLite file in the data dir."""
        return self.cache_url or f"sqlite:///{self.data_dir.resolve() / 'response_cache.sqlite'}"

    @field_validator("anthropic_api_key")
    @classmethod
    def _blank_key_is_no_key(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty ``ANTHROPIC_API_KEY=`` means offline, not an empty credential."""
        if value is not None and not value.get_secret_value().strip():
            return None
        return None if value is None else check_api_key(value)

    @field_validator("anthropic_base_url")
    @classmethod
    def _base_url_is_usable(cls, value: str | None) -> str | None:
        return check_base_url(value)

    @field_validator("data_dir")
    @classmethod
    def _data_dir_is_usable(cls, value: Path) -> Path:
        check_data_dir(value)
        return value

    @field_validator("price_table")
    @classmethod
    def _price_table_loads(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_price_table(value)
        return value

    def __init__(self, **values: Any) -> None:
        """Read the settings; anything invalid is one ``ConfigError`` naming its variable
        (raised outside the ``except``, so it does not chain the error holding the inputs)."""
        try:
            super().__init__(**values)
            return
        except ValidationError as exc:
            message = settings_error(exc, type(self))
        raise ConfigError(message)

    @property
    def uses_emulator(self) -> bool:
        """True when there is no API key, so calls go to the local emulator."""
        return self.anthropic_api_key is None
