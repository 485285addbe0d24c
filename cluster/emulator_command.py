"""``raytroupe emulator``: serve the local Anthropic API stand-in in the foreground.

Point any client at it with ``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT`` and any non-empty
key; its bill is at ``/_emulator/stats``. Stop it with Ctrl-C.

By default it models a realistic account: the requests, input and output tokens per minute of
``Settings`` (the limits raytroupe's own RateLimiter keeps to, from ``RAYTROUPE_RPM/ITPM/OTPM``
or their defaults), with every ``anthropic-ratelimit-*`` header on every reply, as the API
always sends them. ``--rpm`` and the like change one limit; ``--unlimited`` opts out (no
limits, no headers).
"""

from __future__ import annotations

from typing import Annotated, get_args

import typer
from pydantic import ValidationError

from actors.errors import RaytroupeError
from cluster.settings import EmulatorProfile

_FAULT_KINDS = ("overloaded", "server_error", "disconnect", "lost_reply", "stream_error",
                "slow")


def _parse_fault(value: str) -> tuple[str, float]:
    """``KIND=RATE`` -> (kind, rate); a clear error otherwise."""
    kind, sep, rate = value.partition("=")
    if not sep or kind not in _FAULT_KINDS:
        raise typer.BadParameter(
            f"{value!r}: expected KIND=RATE with KIND one of {', '.join(_FAULT_KINDS)}")
    try:
        number = float(rate)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: RATE must be a number from 0 to 1") from None
    if not 0.0 <= number <= 1.0:
        raise typer.BadParameter(f"{value!r}: RATE must be from 0 to 1")
    return kind, number


def emulator_command(
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, envvar="RAYTROUPE_EMULATOR_PORT",
        help="TCP port (0 picks a free one).")] = 8765,
    host: Annotated[str, typer.Option(
        "--host", help="Interface to bind. Anything but loopback is warned about.",
    )] = "127.0.0.1",
    profile: Annotated[str, typer.Option(
        "--profile", envvar="RAYTROUPE_EMULATOR_PROFILE",
        help="Latency: fast (milliseconds) or realistic (seconds, by tier).")] = "fast",
    latency_ms: Annotated[float | None, typer.Option(
        "--latency-ms", min=0.0, help="Fixed latency per request, overriding the profile.",
    )] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", min=1, help="Requests per minute.")] = None,
    itpm: Annotated[int | None, typer.Option(
        "--itpm", min=1, help="Input tokens per minute.")] = None,
    otpm: Annotated[int | None, typer.Option(
        "--otpm", min=1, help="Output tokens per minute.")] = None,
    max_concurrency: Annotated[int | None, typer.Option(
        "--max-concurrency", min=1, help="Requests in flight at once (default: no cap).")] = None,
    unlimited: Annotated[bool, typer.Option(
        "--unlimited", help="No rate limits and no rate-limit headers.")] = False,
    fault_rate: Annotated[list[str] | None, typer.Option(
        "--fault-rate", metavar="KIND=RATE",
        help=f"Inject a fault at a rate in 0..1; KIND: {', '.join(_FAULT_KINDS)}. Repeatable.",
    )] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds latency jitter and faults.")] = 0,
) -> None:
    """Serve the Anthropic API emulator on HOST:PORT until Ctrl-C.

    Limits apply per API key and model tier, as the API's do; unset ones are the account
    Settings describes (RAYTROUPE_RPM/ITPM/OTPM or their defaults), unless --unlimited.
    """
    from emulator import EmulatorConfig
    from emulator.server import serve

    if profile not in get_args(EmulatorProfile):
        raise typer.BadParameter(f"{profile!r}: choose fast or realistic", param_hint="--profile")
    faults = dict(_parse_fault(item) for item in fault_rate or [])
    given = {"rpm": rpm, "itpm": itpm, "otpm": otpm, "max_concurrency": max_concurrency}
    try:
        config = EmulatorConfig(
            host=host, port=port, profile=profile, seed=seed, faults=faults,
            latency_s=None if latency_ms is None else latency_ms / 1000,
            limits=_limits(given, unlimited))
    except ValidationError as exc:
        raise typer.BadParameter(_first_problem(exc)) from None
    try:
        serve(config, announce=typer.echo)
    except OSError as exc:
        raise RaytroupeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _limits(given: dict[str, int | None], unlimited: bool) -> dict[str, int | None]:
    """The flags given, the rest from ``Settings``; nothing at all with ``--unlimited``."""
    if unlimited:
        named = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if named:
            raise typer.BadParameter(f"--unlimited cannot be combined with {', '.join(named)}")
        return {}
    from cluster.settings import Settings

    account = Settings()
    return {"rpm": account.rpm, "itpm": account.itpm, "otpm": account.otpm,
            **{k: v for k, v in given.items() if v is not None}}


def _first_problem(exc: ValidationError) -> str:
    """One line naming the bad setting, e.g. ``faults: overloaded + ... > 1``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
