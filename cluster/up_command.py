"""``raytroupe up`` / ``raytroupe down``: one long-lived runtime that runs and jobs join.

``up`` starts a local Ray head in the background (or joins ``--address``), creates the
cluster's singletons there as detached actors (RateLimiter, Ledger, and offline the emulator)
with this environment's limits, price table and data dir, prints the dashboard URL and how to
stop it, and returns. Every ``raytroupe run`` or ``cluster.init()`` on this machine then joins
it instead of starting a private Ray. ``down`` stops what ``up`` started, by pid.

Example:
    raytroupe up                 # then, in any shell:
    raytroupe run research "How do actor runtimes schedule work?"
    raytroupe status
    raytroupe down
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from actors.errors import ConfigError
from cluster.discovery import ray_temp_dir, running_cluster
from cluster.local_head import UpRecord, free_ports, start_head, stop, wait_until_up

_MAX_WARM_HOSTS = 8
"""``actors.agent_host.MAX_HOSTS_PER_TIER``, not imported: it loads Ray, and `down` is quick."""


def up(
    address: Annotated[str | None, typer.Option(
        "--address", help="Join this running cluster (HOST:PORT or auto) instead of starting "
        "a local head.")] = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="The head's GCS port (0: a free one).")] = 6379,
    dashboard_port: Annotated[int, typer.Option(
        "--dashboard-port", min=0, max=65535,
        help="The dashboard's port on 127.0.0.1 (0: a free one).")] = 8265,
    num_cpus: Annotated[int | None, typer.Option(
        "--num-cpus", min=0, help="CPUs the head offers. Default: all.")] = None,
    warm_hosts: Annotated[int, typer.Option(
        "--warm-hosts", min=0, max=_MAX_WARM_HOSTS,
        help="Warm Agent hosts kept per tier for runs that join (0: none, every run starts "
        "its own agent actors).")] = 1,
) -> None:
    """Start a long-lived local runtime that runs and jobs join."""
    record = UpRecord.load()
    if record is not None:
        typer.echo(f"raytroupe is already up at {record.address} (dashboard "
                   f"{record.dashboard_url}); stop it with `raytroupe down`")
        return
    running = running_cluster() if address is None else None
    if running is not None:
        raise ConfigError(f"a Ray cluster that `raytroupe up` did not start is running at "
                          f"{running}: create the runtime on it with `raytroupe up --address "
                          "auto`, or stop it first")
    auth_mode = os.environ.get("RAY_AUTH_MODE") or "disabled"
    os.environ["RAY_AUTH_MODE"] = auth_mode
    if address is not None:
        _join(address, auth_mode, warm_hosts)
        return
    if port == 0 or dashboard_port == 0:
        free = free_ports(2)
        port, dashboard_port = port or free[0], dashboard_port or free[1]
    head, temp_dir = start_head(port=port, dashboard_port=dashboard_port, num_cpus=num_cpus,
                                auth_mode=auth_mode)
    gcs, dashboard = f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}"
    wait_until_up(head, gcs, dashboard, temp_dir / "up.log")
    record = UpRecord(pid=head.pid, address=gcs, dashboard_url=dashboard,
                      temp_dir=str(temp_dir), auth_mode=auth_mode, version=_version())
    record.save()
    (ray_temp_dir() / "ray_current_cluster").write_text(gcs, encoding="utf-8")
    try:
        _create_singletons(gcs, warm_hosts)
    except BaseException:
        stop(head.pid)
        record.forget()
        raise
    typer.echo(f"raytroupe is up: Ray head at {gcs}, dashboard {dashboard} "
               f"(RAY_AUTH_MODE={auth_mode}; clients must use the same)")
    typer.echo("runs and `cluster.init()` on this machine join it; `raytroupe status` shows "
               "it; stop it with `raytroupe down`")


def down() -> None:
    """Stop the runtime that `raytroupe up` started (by pid; never `ray stop`)."""
    record = UpRecord.load()
    if record is None:
        typer.echo(f"nothing to stop: no runtime started by `raytroupe up` under "
                   f"{ray_temp_dir()}")
        return
    if record.pid is None:
        record.forget()
        typer.echo(f"forgot the cluster at {record.address}: `up` joined it and did not start "
                   "it, so it keeps running (with its singletons)")
        return
    stopped = stop(record.pid)
    record.forget()
    typer.echo(f"stopped the runtime at {record.address} (pid {record.pid})" if stopped else
               f"the runtime at {record.address} had already stopped")


def _join(address: str, auth_mode: str, warm_hosts: int) -> None:
    from cluster.discovery import resolve

    gcs = resolve(address)
    if gcs is None:
        raise ConfigError("--address local starts nothing to join: drop --address to start a "
                          "local head")
    _create_singletons(gcs, warm_hosts)
    UpRecord(pid=None, address=gcs, dashboard_url=None, temp_dir=None, auth_mode=auth_mode,
             version=_version()).save()
    typer.echo(f"raytroupe is up on the cluster at {gcs}: its singletons are detached there; "
               "`raytroupe down` forgets it and leaves the cluster running")


def _create_singletons(gcs: str, warm_hosts: int) -> None:
    """Join the head and get-or-create the detached singletons with this environment's
    settings (written as the runtime's record) and the warm Agent hosts that runs joining it
    use (``actors/agent_host.py``); then disconnect: they stay."""
    import ray

    import cluster
    from actors.agent_host import start_hosts
    from cluster import runtime_info

    runtime = cluster.init(address=gcs, detached=True)
    runtime_info.claim(runtime.backend.namespace)
    ray.get([runtime.limiter.status.remote(), runtime.ledger.stats.remote()], timeout=120)
    if warm_hosts:
        start_hosts(runtime.backend.namespace, per_tier=warm_hosts)
    cluster.shutdown()


def _version() -> str:
    from cluster.runtime_info import raytroupe_version

    return raytroupe_version()
