"""The emulator's configuration: where it listens, how fast and how faulty it is, its limits.

One frozen pydantic model, so a config crosses into a subprocess as JSON
(``EmulatorProcess``) and the CLI validates its options in one place.

Example:
    >>> cfg = EmulatorConfig(profile="fast", limits=Limits(rpm=50), faults=Faults(overloaded=0.1))
    >>> cfg.limits_for("haiku").rpm
    50
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emulator.batch_limits import BatchLimits
from emulator.ratelimits import Limits

__all__ = ["DEFAULT_API_KEY", "EmulatorConfig", "FaultKind", "Faults", "Limits", "Profile"]

log = logging.getLogger("emulator")

Profile = Literal["fast", "realistic"]
"""``fast``: a few milliseconds per reply; ``realistic``: seconds, ordered haiku < sonnet < opus."""

FaultKind = Literal["overloaded", "server_error", "disconnect", "lost_reply", "stream_error",
                    "slow"]
"""The faults the emulator can inject (see :mod:`emulator.faults` for what each one bills)."""

DEFAULT_API_KEY = "sk-ant-emulator"
"""The dummy key handles give to clients; any non-empty key works unless ``api_keys`` is set."""


class Faults(BaseModel):
    """Per-request fault rates in 0..1, drawn from the config's seeded generator.

    ``overloaded``, ``server_error``, ``disconnect``, ``lost_reply`` and ``stream_error``
    exclude each other
    (one draw picks at most one of them), so their sum must not exceed 1; ``slow`` is drawn
    separately and adds ``slow_s`` to the reply's latency.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    overloaded: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rate of 529 ``overloaded_error`` responses (not billed)."""
    server_error: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rate of 500 ``api_error`` responses (not billed)."""
    disconnect: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rate of connections dropped before the model runs (not billed)."""
    lost_reply: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rate of whole (non-streamed) replies billed, then lost: the connection is dropped
    instead of sending them (what a client sees when a reply is lost on the way back)."""
    stream_error: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rate of ``event: error`` in the middle of a stream (billed for what was sent)."""
    slow: float = Field(default=0.0, ge=0.0, le=1.0)
    """Rate of replies delayed by an extra ``slow_s`` seconds."""
    slow_s: float = Field(default=5.0, ge=0.0)
    """The extra latency of a ``slow`` reply, in seconds."""

    @model_validator(mode="after")
    def _exclusive_rates_fit(self) -> Faults:
        total = (self.overloaded + self.server_error + self.disconnect + self.lost_reply
                 + self.stream_error)
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"overloaded + server_error + disconnect + lost_reply + stream_error = {total:g}"
                " > 1: "
                "at most one of them can happen to a request"
            )
        return self

    @property
    def any(self) -> bool:
        """True when some fault can happen (the hot path skips the draw otherwise)."""
        return bool(self.overloaded or self.server_error or self.disconnect
                    or self.lost_reply or self.stream_error or self.slow)


class EmulatorConfig(BaseModel):
    """Everything that shapes one emulator instance.

    Example:
        >>> EmulatorConfig(latency_s=0).latency_s
        0.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Interface to bind; anything but loopback logs a warning (the emulator has no real auth)."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port; 0 picks a free one."""
    profile: Profile = "fast"
    """Latency profile when ``latency_s`` is unset."""
    latency_s: float | None = Field(default=None, ge=0.0)
    """A fixed total latency per request overriding the profile (0 = instant)."""
    seed: int = 0
    """Seeds latency jitter, fault draws and ids that must be reproducible."""
    limits: Limits = Limits()
    """Rate limits of every tier (default: unlimited)."""
    limits_by_tier: dict[str, Limits] = Field(default_factory=dict)
    """Per-tier overrides of ``limits`` (keys: haiku, sonnet, opus)."""
    faults: Faults = Faults()
    """Injected faults (default: none)."""
    min_cacheable_tokens: int | None = Field(default=None, ge=0)
    """Overrides every model's minimum cacheable prefix (tests use small prompts)."""
    batch_delay_s: float = Field(default=0.5, ge=0.0)
    """How long a Message Batch waits before it is processed."""
    batch_expire_s: float = Field(default=86_400.0, gt=0.0)
    """After this long, unprocessed batch requests expire (the API's 24 h)."""
    batch_limits: BatchLimits = BatchLimits()
    """The batch API's own limits (endpoint RPM, processing queue); default: unlimited."""
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Request bodies over this get 413 ``request_too_large`` (the API's 32 MB)."""
    api_keys: list[str] | None = None
    """If set, only these keys are accepted; otherwise any non-empty key is."""
    price_table: Path | None = None
    """A TOML file merged over the shipped price table (``actors/tiers.toml``)."""
    received_log_size: int = Field(default=1_000, ge=0)
    """How many request bodies the emulator keeps for tests to inspect."""

    @model_validator(mode="after")
    def _warn_off_loopback(self) -> EmulatorConfig:
        if not _is_loopback(self.host):
            log.warning("emulator bound to %s, not loopback: anyone who can reach it can use "
                        "it, and it accepts any API key unless api_keys is set", self.host)
        return self

    def limits_for(self, tier: str) -> Limits:
        """The limits of ``tier``: its override if any, else the common ``limits``."""
        return self.limits_by_tier.get(tier, self.limits)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
