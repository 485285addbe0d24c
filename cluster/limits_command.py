"""``raytroupe limits`` / ``raytroupe limits set``: the runtime's limits, changed for everyone.

A runtime's limits belong to the cluster, not to a driver (``cluster.runtime_info``). ``set``
changes one tier's (or every tier's) limits in the running RateLimiter at once and in the
runtime's record, which later drivers and a RateLimiter that Ray restarts take them from.

Example:
    raytroupe limits set --tier haiku --itpm 400000 --rpm 2000
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, get_args

import typer

from actors.errors import ConfigError
from cluster.discovery import attached

if TYPE_CHECKING:
    from actors.limits import TierLimits
    from cluster.runtime_info import RuntimeInfo

limits_app = typer.Typer(name="limits", no_args_is_help=True, add_completion=False)

Tier = Annotated[str | None, typer.Option(
    "--tier", help="haiku, sonnet or opus. Default: every tier.")]


@limits_app.command("show")
def show() -> None:
    """Print the runtime's limits per tier."""
    from cluster.discovery import NAMESPACE

    with attached(NAMESPACE):
        info = _info(NAMESPACE)
        typer.echo(f"default: {_line(info.limits)}")
        for tier, limits in sorted(info.per_tier.items()):
            typer.echo(f"{tier}: {_line(limits)}")


@limits_app.command("set")
def set_limits(
    tier: Tier = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1)] = None,
    itpm: Annotated[int | None, typer.Option("--itpm", min=1)] = None,
    otpm: Annotated[int | None, typer.Option("--otpm", min=1)] = None,
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency", min=1)] = None,
) -> None:
    """Change the runtime's limits for every job on it, now and after a limiter restart."""
    import ray

    from actors.singletons import lookup
    from actors.tiers import Tier as TierName
    from cluster import runtime_info
    from cluster.discovery import NAMESPACE

    tiers = list(get_args(TierName))
    if tier is not None and tier not in tiers:
        raise ConfigError(f"--tier {tier!r}: choose one of {', '.join(tiers)}")
    changes = {k: v for k, v in {"rpm": rpm, "itpm": itpm, "otpm": otpm,
                                 "max_concurrency": max_concurrency}.items() if v is not None}
    if not changes:
        raise ConfigError("nothing to set: give --rpm, --itpm, --otpm or --max-concurrency")
    with attached(NAMESPACE):
        info = _info(NAMESPACE)
        per_tier = dict(info.per_tier)
        for name in [tier] if tier else tiers:
            per_tier[name] = per_tier.get(name, info.limits).model_copy(update=changes)
        runtime_info.write(NAMESPACE, info.model_copy(update={"per_tier": per_tier}),
                           overwrite=True)
        limiter = lookup("rate_limiter", NAMESPACE)
        ray.get([limiter.set_limits.remote(name, per_tier[name])
                 for name in ([tier] if tier else tiers)], timeout=30)
        for name in [tier] if tier else tiers:
            typer.echo(f"{name}: {_line(per_tier[name])}")


def _line(limits: TierLimits) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in limits.model_dump().items())


def _info(namespace: str) -> RuntimeInfo:
    from cluster import runtime_info

    info = runtime_info.read(namespace)
    if info is None:
        raise ConfigError("the running cluster has no raytroupe runtime yet: start one with "
                          "`raytroupe up`")
    return info
