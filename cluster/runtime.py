"""Start or join Ray, get-or-create the cluster's singletons, and pick the API backend.

``init`` is the only place that starts Ray. Called twice, or from two driver processes on one
cluster, it finds the same RateLimiter, Ledger and (offline) emulator by name in the
``raytroupe`` namespace: one limit for the whole cluster is the point.

Example:
    >>> import cluster
    >>> runtime = cluster.init()                       # doctest: +SKIP
    >>> lead = runtime.spawn(AgentSpec(name="r1/lead", tier="sonnet"))  # doctest: +SKIP
    >>> cluster.shutdown()                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from pydantic import SecretStr

from actors import singletons
from actors.agent import Backend, spawn_agent
from actors.agent_host import start_run_host
from actors.ledger import LEDGER_NAME, get_ledger
from actors.limits import TierLimits
from actors.messages import AgentSpec
from actors.ratelimiter import LIMITER_NAME, get_rate_limiter
from actors.redaction import install_key_redaction
from cluster import discovery, private_ray, runtime_info
from cluster.discovery import NAMESPACE
from cluster.private_emulator import PrivateEmulator
from cluster.settings import Settings

log = logging.getLogger("raytroupe")

EMULATOR_KEY = SecretStr("sk-ant-emulator-offline")
"""The dummy key agents present to the emulator (it accepts any non-empty key)."""


@dataclass
class Runtime:
    """The handles a driver needs: settings, the singletons and how agents reach the API."""

    settings: Settings
    backend: Backend
    started_ray: bool
    emulator: Any = None
    """The offline emulator actor, when this runtime uses one."""
    joined: bool = False
    """True on a cluster that outlives this driver (its singletons are detached)."""

    @property
    def limiter(self) -> Any:
        return self.backend.limiter

    @property
    def ledger(self) -> Any:
        return self.backend.ledger

    def spawn(self, spec: AgentSpec, tools: Sequence[Callable[..., Any]] = (),
              **options: Any) -> Any:
        """Create (or get, by name) an Agent actor wired to this runtime's backend."""
        return spawn_agent(spec, self.backend, tools, **options)


_current: Runtime | None = None
_private_emulator: PrivateEmulator | None = None
"""The offline emulator of the private Ray this process started, served from a thread."""
_keepalive: dict[str, dict[Any, Any]] = {}
"""Singleton (and run host) handles per namespace, by actor id, held until this process stops
Ray.

A job-scoped named actor is destroyed once its creator's handle is gone (handles found later by
name do not keep it alive); a driver that drops its runtime and calls ``init`` again (two CLI
runs in one process) could otherwise find the Ledger by name while Ray is tearing it down."""


def init(address: str | None = None, settings: Settings | None = None, *,
         namespace: str = NAMESPACE, detached: bool | None = None,
         host_agents: bool = False, **ray_init: Any) -> Runtime:
    """Start or join Ray and get-or-create the RateLimiter, the Ledger and, offline, the emulator.

    Args:
        address: None joins a runtime that is up (``raytroupe up``, ``RAY_ADDRESS``, Ray's
            current-cluster file) or else starts a private local Ray; ``"local"`` always starts
            a private one; ``"auto"`` joins a running cluster or fails; ``"HOST:PORT"`` or
            ``"ray://host:10001"`` joins that one (checked within a few seconds).
        settings: Defaults to ``Settings()`` read from the environment. On a cluster that
            already has a runtime, its limits, price table and data dir apply (see
            ``cluster.runtime_info``).
        namespace: Where the named singletons live; drivers that share it share limits.
        detached: Whether the singletons outlive this driver. Default: yes on a cluster this
            call joined, no on a private Ray (everything goes when it stops).
        host_agents: On a private Ray this process started, start one Agent host that the
            sessions' agents share (``actors/agent_host.py``), created first so that it takes
            a worker Ray started with the node, and not waited for (``docs/performance.md``,
            "Start-up"). On a joined cluster the runtime's warm hosts serve them, if any.
        **ray_init: Passed to ``ray.init`` when this call starts Ray.
    """
    global _current
    install_key_redaction()
    settings = settings or Settings()
    # A second init keeps the first one's claim: shutdown() stops the Ray that init started.
    started = not ray.is_initialized() or (_current is not None and _current.started_ray)
    joined = _current.joined if _current is not None and ray.is_initialized() else False
    if not ray.is_initialized():
        joined = _connect(address, namespace, ray_init, settings)
    detached = joined if detached is None else detached
    per_tier: Mapping[str, TierLimits] = {}
    if detached:
        settings, _info = runtime_info.adopt(settings, namespace)
        per_tier = runtime_info.RecordedLimits(namespace)
    lifetime = "detached" if detached else None
    host = start_run_host(namespace) if host_agents and started and not joined else None
    limiter = get_rate_limiter(default_limits=_limits(settings), per_tier=per_tier,
                               namespace=namespace, lifetime=lifetime)
    ledger = get_ledger(data_dir=settings.data_dir.resolve(), price_table=settings.price_table,
                        namespace=namespace, detached=detached)
    base_url, key, emulator = _backend_endpoint(settings, namespace, lifetime)
    _hold(namespace, (limiter, ledger, emulator, host))
    singletons.remember(LIMITER_NAME, namespace, limiter)
    singletons.remember(LEDGER_NAME, namespace, ledger)
    backend = Backend(api_key=key, base_url=base_url,
                      price_table=str(settings.price_table) if settings.price_table else None,
                      namespace=namespace, cache_url=settings.response_cache_url(),
                      cache_shared=settings.cache_shared, cache=settings.cache,
                      cache_ttl=settings.cache_ttl,
                      job=str(ray.get_runtime_context().get_job_id()))
    _current = Runtime(settings=settings, backend=backend, started_ray=started, emulator=emulator,
                       joined=joined)
    return _current


def _connect(address: str | None, namespace: str, ray_init: dict[str, Any],
             settings: Settings) -> bool:
    """Join the cluster ``address`` names (or one that is up), else start a private Ray.

    Says which in one line; returns True if it joined a cluster that outlives this driver.
    Offline, a private Ray's emulator starts first, in this process (``private_emulator``).
    """
    global _private_emulator
    found = discovery.resolve(address)
    if found is None:
        log.warning("raytroupe: starting a private Ray for this driver (it stops with it); "
                    "`raytroupe up` keeps one running that runs join")
        if _private_emulator is None and _offline(settings):
            _private_emulator = PrivateEmulator(settings.emulator_profile)
        try:
            private_ray.start(namespace, **ray_init)
        except BaseException:
            if _private_emulator is not None:
                _private_emulator.stop()
                _private_emulator = None
            raise
        return False
    log.warning("raytroupe: joining the Ray cluster at %s (its RateLimiter and Ledger are "
                "shared by every job on it)", found)
    ray.init(address=found, namespace=namespace,
             **{k: v for k, v in ray_init.items() if k not in _LOCAL_ONLY})
    return True


_LOCAL_ONLY = frozenset({"num_cpus", "num_gpus", "object_store_memory", "include_dashboard",
                         "dashboard_host", "dashboard_port", "resources", "_system_config"})
"""``ray.init`` arguments that only make sense when starting Ray, refused when joining."""


def current() -> Runtime:
    """The runtime of the last ``init`` in this process; raises if there is none."""
    if _current is None:
        raise RuntimeError("raytroupe is not initialised: call cluster.init() first")
    return _current


def shutdown() -> None:
    """Forget the runtime and stop Ray if ``init`` started it (job-scoped singletons go too)."""
    global _current
    global _private_emulator
    if _current is not None and _current.started_ray:
        ray.shutdown()
        _keepalive.clear()
        if _private_emulator is not None:
            _private_emulator.stop()
            _private_emulator = None
    _current = None


def _hold(namespace: str, handles: tuple[Any, ...]) -> None:
    """Keep the first handle obtained for each of these actors: only the creator's handle owns
    a job-scoped actor; a handle from a later ``get_if_exists`` does not keep it alive."""
    held = _keepalive.setdefault(namespace, {})
    for handle in handles:
        if handle is not None:
            held.setdefault(handle._actor_id, handle)


def _offline(settings: Settings) -> bool:
    """No key and no base URL: agents call the emulator (see :func:`_backend_endpoint`)."""
    return settings.anthropic_api_key is None and not settings.anthropic_base_url


def _limits(settings: Settings) -> TierLimits:
    return TierLimits(rpm=settings.rpm, itpm=settings.itpm, otpm=settings.otpm,
                      max_concurrency=settings.max_concurrency)


def _backend_endpoint(settings: Settings, namespace: str,
                      lifetime: str | None) -> tuple[str | None, SecretStr, Any]:
    """The real API with a key; else the given base URL, the emulator of this driver's private
    Ray, or the cluster-wide emulator actor."""
    if settings.anthropic_api_key is not None:
        return settings.anthropic_base_url, settings.anthropic_api_key, None
    if settings.anthropic_base_url:
        log.info("raytroupe: no ANTHROPIC_API_KEY; using the emulator at %s",
                 settings.anthropic_base_url)
        return settings.anthropic_base_url, EMULATOR_KEY, None
    emulator = None
    if _private_emulator is not None and lifetime is None:  # this driver's private Ray
        base_url = _private_emulator.base_url()
    else:
        from cluster.emulator_actor import get_emulator

        emulator = get_emulator(settings, namespace=namespace, lifetime=lifetime)
        base_url = ray.get(emulator.base_url.remote())
    log.warning("raytroupe: no ANTHROPIC_API_KEY; running offline on the emulator at %s",
                base_url)
    return base_url, EMULATOR_KEY, emulator
