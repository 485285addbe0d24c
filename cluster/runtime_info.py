"""What a long-lived runtime is: its raytroupe version, limits, price table and data dir.

The first driver (or ``raytroupe up``) that creates a cluster's singletons writes this record
into Ray's key-value store (in the GCS, so it lives as long as the cluster); every later
driver reads it and uses the runtime's values. A driver that explicitly asked for other ones
(``RAYTROUPE_RPM=...``) gets one line naming both, never a silent mix: one limiter can hold only
one set of limits. ``raytroupe limits set`` rewrites the record and the limiter's limits, for
everyone, and the record is what a limiter restarted by Ray takes its limits from.

Why Ray's internal KV (``ray.experimental.internal_kv``): it is what Ray's own libraries (Serve,
Jobs) keep cluster metadata in; a file would live on one node only, and an actor costs a process.

Example:
    >>> info = RuntimeInfo.of(Settings(_env_file=None), owner="up")
    >>> info.limits.rpm
    4000
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from actors.limits import TierLimits
from actors.tiers import Tier
from cluster.settings import Settings

log = logging.getLogger("raytroupe")

_KV_NAMESPACE = "raytroupe"
_SHARED = ("rpm", "itpm", "otpm", "max_concurrency", "price_table", "data_dir")
"""Settings that belong to the runtime, not to one driver."""


def raytroupe_version() -> str:
    try:
        return version("raytroupe")
    except PackageNotFoundError:  # a source checkout that was never installed
        return "unknown"


class RuntimeInfo(BaseModel):
    """The cluster's runtime record (one per namespace)."""

    model_config = ConfigDict(frozen=True)

    version: str
    limits: TierLimits
    per_tier: dict[Tier, TierLimits] = {}
    price_table: str | None = None
    data_dir: str
    owner: Literal["up", "driver"] = "driver"
    """Who created the singletons: ``raytroupe up`` or the first driver that joined."""

    @classmethod
    def of(cls, settings: Settings, owner: Literal["up", "driver"]) -> RuntimeInfo:
        return cls(version=raytroupe_version(), owner=owner,
                   limits=TierLimits(rpm=settings.rpm, itpm=settings.itpm, otpm=settings.otpm,
                                     max_concurrency=settings.max_concurrency),
                   price_table=str(Path(settings.price_table).resolve())
                   if settings.price_table else None,
                   data_dir=str(Path(settings.data_dir).expanduser().resolve()))

    def settings_for(self, settings: Settings) -> Settings:
        """``settings`` with the runtime's shared values (the driver's key etc. kept)."""
        return settings.model_copy(update={
            "rpm": self.limits.rpm, "itpm": self.limits.itpm, "otpm": self.limits.otpm,
            "max_concurrency": self.limits.max_concurrency, "data_dir": Path(self.data_dir),
            "price_table": Path(self.price_table) if self.price_table else None})

    def conflicts(self, settings: Settings) -> list[str]:
        """``name: runtime's vs asked`` for each shared setting the driver set and differs."""
        mine = RuntimeInfo.of(settings, owner="driver")
        theirs = {**self.limits.model_dump(), "price_table": self.price_table,
                  "data_dir": self.data_dir}
        asked = {**mine.limits.model_dump(), "price_table": mine.price_table,
                 "data_dir": mine.data_dir}
        return [f"{name} {theirs[name]} (asked {asked[name]})" for name in _SHARED
                if name in settings.model_fields_set and theirs[name] != asked[name]]


def read(namespace: str) -> RuntimeInfo | None:
    """The runtime record of ``namespace`` on the connected cluster, or None."""
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(_key(namespace), namespace=_KV_NAMESPACE)
    return None if raw is None else RuntimeInfo.model_validate_json(raw)


def write(namespace: str, info: RuntimeInfo, *, overwrite: bool) -> RuntimeInfo:
    """Store the record (first writer wins unless ``overwrite``); return the one stored."""
    from ray.experimental import internal_kv

    internal_kv._internal_kv_put(_key(namespace), info.model_dump_json(), overwrite=overwrite,
                                 namespace=_KV_NAMESPACE)
    stored = read(namespace)
    assert stored is not None
    return stored


def adopt(settings: Settings, namespace: str) -> tuple[Settings, RuntimeInfo]:
    """Join the runtime's record (writing ours if there is none): the settings to use.

    Logs one line if the driver explicitly asked for other shared values, or runs another
    raytroupe version than the runtime's.
    """
    info = write(namespace, RuntimeInfo.of(settings, owner="driver"), overwrite=False)
    conflicts = info.conflicts(settings)
    if conflicts:
        log.warning("raytroupe: the running runtime's settings apply, not this driver's: %s; "
                    "change them for everyone with `raytroupe limits set`",
                    "; ".join(conflicts))
    if info.version != raytroupe_version():
        log.warning("raytroupe: this driver is raytroupe %s but the running runtime is %s; "
                    "restart the runtime (`raytroupe down`, `raytroupe up`) to upgrade it",
                    raytroupe_version(), info.version)
    return info.settings_for(settings), info


def claim(namespace: str) -> None:
    """Mark the runtime record as made by ``raytroupe up`` (``status`` shows who owns it)."""
    info = read(namespace)
    if info is not None:
        write(namespace, info.model_copy(update={"owner": "up"}), overwrite=True)


class RecordedLimits(Mapping[str, TierLimits]):
    """The per-tier limits of the runtime record, read when the limiter iterates them.

    Given to ``get_rate_limiter`` as its ``per_tier``: Ray restarts a crashed limiter by
    running ``__init__`` again with the arguments it was created with, so a plain dict would
    bring back the limits of the day it was created; this reads what ``limits set`` recorded.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _read(self) -> dict[str, TierLimits]:
        try:
            info = read(self.namespace)
        except Exception:
            log.warning("raytroupe: the runtime's recorded limits could not be read")
            return {}
        return dict(info.per_tier) if info is not None else {}

    def __getitem__(self, tier: str) -> TierLimits:
        return self._read()[tier]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _key(namespace: str) -> str:
    return f"runtime/{namespace}"
