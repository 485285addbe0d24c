"""Warm Agent hosts: long-lived actors that ``raytroupe up`` keeps and every run that joins uses.

Why: a run's own Agent actors each need a fresh Ray worker process (a job's actors cannot run
in another job's workers), which then imports the SDK: 1-4 s on 2 cores before a run's first
API call, most of a warm start-up (``docs/performance.md``). An :class:`AgentHost` has paid all
that once: it is detached (it outlives every job), named ``agent-host/<tier>-<i>`` in the
runtime's namespace, and serves the agents of any run as plain ``Agent`` objects, one per
agent name, made on that agent's first call. A CLI run on a private Ray gets one host of its
own, job-scoped, for all its tiers (:func:`start_run_host`): one process and one SDK import
for the run instead of one per agent.

What stays per run: every call carries its agent's ``AgentSpec`` (name, role, tier, run id),
its run's ``Backend`` (API key, base URL, retry policy) and its ``AskRequest`` (run id, role),
so each agent has its own client, memory and budget check, and the Ledger attributes every
record to its run and agent exactly as with an actor of its own. What a run shares with the
others on a host (``docs/cluster.md``): the process and its event loop (a crash or a blocking
call hurts every run on it) and one Ledger client (as agents of one actor always did); the
RateLimiter lease is one per Ray job served, so each driver keeps its fair share of a limit.
Agents with tools are never hosted: a user's callables run only in the run's own actors. An
agent whose run died without closing it is dropped once idle.

Example:
    >>> host_name("haiku", 0)
    'agent-host/haiku-0'
    >>> lead = spawn(AgentSpec(name="r1/research/lead", tier="sonnet"), backend)  # doctest: +SKIP
    >>> reply = await lead.ask.remote(AskRequest(prompt="Hi", run_id="r1"))      # doctest: +SKIP
    >>> stop(lead)                                                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from actors import call_gc, singletons
from actors.agent import Agent, Backend, spawn_agent
from actors.errors import RaytroupeError, SingletonLost
from actors.lane_server import LaneServer
from actors.lane_wire import LaneAddress
from actors.ledger import LEDGER_NAME
from actors.ledger_client import LedgerClient
from actors.limiter_lease import LimiterLease
from actors.messages import AgentSpec, AskRequest, Reply, TextDelta
from actors.ratelimiter import LIMITER_NAME
from actors.redaction import install_key_redaction
from actors.tiers import TIERS, Tier

HOST_PREFIX = "agent-host/"
RUN_HOST = f"{HOST_PREFIX}run"
"""A private Ray's one host (:func:`start_run_host`): it serves its run's agents of any tier."""
MAX_HOSTS_PER_TIER = 8
IDLE_TTL_S = 900.0
"""An agent no call used for this long is dropped (its run ended without closing it)."""
_SWEEP_EVERY_S = 60.0
_RUNS_KEPT = 1000


def host_name(tier: Tier, index: int) -> str:
    """``agent-host/haiku-0``: the name a warm host has in the runtime's namespace."""
    return f"{HOST_PREFIX}{tier}-{index}"


class AgentHost:
    """An async actor serving many runs' agents, each an ``Agent`` object kept by name.

    Start them with :func:`start_hosts`; use them through :func:`spawn`.
    """

    def __init__(self, namespace: str) -> None:
        import anthropic  # noqa: F401 - the point of a warm host: imported before any run

        install_key_redaction()
        self.namespace = namespace
        self._leases: dict[str | None, LimiterLease] = {}
        """One RateLimiter lease per job served: jobs take turns for a binding limit (its fair
        share), so runs on one host must not draw from one share."""
        self._job_of: dict[str, str | None] = {}
        self.ledger = LedgerClient(singletons.Singleton(LEDGER_NAME, namespace))
        with contextlib.suppress(SingletonLost):  # a run's own host may start before the
            singletons.lookup(LEDGER_NAME, namespace)  # Ledger: its first call looks it up
        self._agents: dict[str, Agent] = {}
        self._busy: dict[str, int] = {}
        self._used: dict[str, float] = {}
        self._swept = time.monotonic()
        self._closing: set[asyncio.Task[Any]] = set()
        self.served: dict[str, int] = {}
        """Calls served per run id (``stats``: tests and ``status`` read it)."""
        call_gc.tune_for_calls()  # once: the agents it makes per run stay collectable

    def ready(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        """The agents held now, the calls served per run since the host started, and the
        jobs whose leases it holds (one per job with an agent here)."""
        return {"agents": sorted(self._agents), "served": dict(self.served),
                "jobs": sorted(str(job) for job in self._leases)}

    async def ask(self, spec: AgentSpec, backend: Backend, request: AskRequest) -> Reply:
        """``Agent.ask`` of the agent ``spec`` names (made on its first call)."""
        with self._using(spec, backend, request) as agent:
            return await agent.ask(request)

    async def stream(self, spec: AgentSpec, backend: Backend,
                     request: AskRequest) -> AsyncIterator[TextDelta | Reply]:
        """``Agent.stream`` of the agent ``spec`` names."""
        with self._using(spec, backend, request) as agent:
            async for item in agent.stream(request):
                yield item

    async def open_lane(self, spec: AgentSpec, backend: Backend,
                        caller_node: str) -> LaneAddress | None:
        """A lane to the agent ``spec`` names, for a caller on this node (``Agent.open_lane``):
        its asks skip Ray's per-call cost; None for a caller on another node."""
        return await self._lanes.open(caller_node, functools.partial(self._lane_ask, spec,
                                                                     backend), spec.name)

    async def _lane_ask(self, spec: AgentSpec, backend: Backend,
                        request: AskRequest) -> Reply | RaytroupeError:
        with self._using(spec, backend, request) as agent:
            return await agent._ask_or_error(request)

    @functools.cached_property
    def _lanes(self) -> LaneServer:
        return LaneServer(self._unbound, self.namespace)

    @staticmethod
    async def _unbound(_request: AskRequest) -> Reply | RaytroupeError:
        return RaytroupeError("a warm host's lane serves the agent it was opened for")

    async def warm(self, spec: AgentSpec, backend: Backend) -> None:
        """``Agent.warm`` of the agent ``spec`` names (made now rather than on its first call)."""
        self._sweep()
        await self._agent(spec, backend).warm()

    async def flush(self) -> None:
        """Wait until every Ledger record of this host is acknowledged (every run's)."""
        await self.ledger.flush()

    async def close(self, names: Sequence[str]) -> None:
        """Drop these agents (their run ended); records already journaled are still shipped."""
        for name in names:
            self._drop(name)
            if "_lanes" in self.__dict__:
                self._lanes.hang_up(name)

    @contextlib.contextmanager
    def _using(self, spec: AgentSpec, backend: Backend, request: AskRequest) -> Iterator[Agent]:
        self._sweep()
        agent = self._agent(spec, backend)
        run_id = request.run_id or spec.run_id
        self.served[run_id] = self.served.get(run_id, 0) + 1
        if len(self.served) > _RUNS_KEPT:  # a long-lived host: forget the oldest runs
            del self.served[next(iter(self.served))]
        self._busy[spec.name] = self._busy.get(spec.name, 0) + 1
        try:
            yield agent
        finally:
            self._busy[spec.name] -= 1
            self._used[spec.name] = time.monotonic()

    def _agent(self, spec: AgentSpec, backend: Backend) -> Agent:
        """The agent ``spec`` names, made on its first use."""
        agent = self._agents.get(spec.name)
        if agent is None:
            agent = self._agents[spec.name] = Agent(spec, backend,
                                                    clients=(self._lease(backend.job),
                                                             self.ledger))
            self._job_of[spec.name] = backend.job
            self._used[spec.name] = time.monotonic()  # swept if never called
        return agent

    def _sweep(self) -> None:
        """Drop agents idle for ``IDLE_TTL_S``: a driver that died never closed them."""
        now = time.monotonic()
        if now - self._swept < _SWEEP_EVERY_S:
            return
        self._swept = now
        for name in [n for n, t in self._used.items()
                     if now - t > IDLE_TTL_S and not self._busy.get(n)]:
            self._drop(name)

    def _lease(self, job: str | None) -> LimiterLease:
        """The lease of ``job``'s calls (made on its first agent here)."""
        lease = self._leases.get(job)
        if lease is None:
            lease = self._leases[job] = LimiterLease(
                singletons.Singleton(LIMITER_NAME, self.namespace),
                **({"job": job} if job is not None else {}))
        return lease

    def _drop(self, name: str) -> None:
        agent = self._agents.pop(name, None)
        self._busy.pop(name, None)
        self._used.pop(name, None)
        job = self._job_of.pop(name, None)
        closing = [agent.client.close()] if agent is not None else []
        if job in self._leases and job not in self._job_of.values():
            closing.append(self._leases.pop(job).close())  # the job's last agent here
        for step in closing:  # off the caller's path
            task = asyncio.get_running_loop().create_task(step)
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


@dataclass(frozen=True)
class _Method:
    """``handle.ask`` of a hosted agent: ``.remote(request)`` calls the host with its spec."""

    method: Any
    prefix: tuple[Any, ...]

    def remote(self, *args: Any) -> Any:
        return self.method.remote(*self.prefix, *args)


@dataclass(frozen=True)
class HostedAgent:
    """An agent served by a warm host, used like an Agent actor's handle: ``ask.remote``,
    ``stream.remote`` (a streaming generator; ``ray.cancel`` stops it), ``warm.remote``,
    ``flush.remote`` and ``retire.remote`` (a flush: the lease is the host's, kept for the
    next run)."""

    host: Any
    spec: AgentSpec
    backend: Backend

    @property
    def ask(self) -> _Method:
        return _Method(self.host.ask, (self.spec, self.backend))

    @property
    def stream(self) -> _Method:
        return _Method(self.host.stream, (self.spec, self.backend))

    @property
    def warm(self) -> _Method:
        return _Method(self.host.warm, (self.spec, self.backend))

    @property
    def open_lane(self) -> _Method:
        return _Method(self.host.open_lane, (self.spec, self.backend))

    @functools.cached_property
    def lane_key(self) -> str:
        """One lane per (caller, hosted agent): the host's id, the agent's name and its spec
        and job. A lane is bound to the spec it was opened with, so an agent spawned again
        under its name with another spec (a later run's ``run_id``) must not reuse it."""
        return (f"{self.host._actor_id.hex()}/{self.spec.name}/{hash(self.spec):x}/"
                f"{self.backend.job}")

    @property
    def flush(self) -> _Method:
        return _Method(self.host.flush, ())

    retire = flush

    @property
    def _actor_id(self) -> Any:
        """The host's: its process is the agent's, so its death and restart are the agent's
        (``actors/agent_handle.py`` probes it)."""
        return self.host._actor_id

    @property
    def __ray_ready__(self) -> Any:
        return self.host.__ray_ready__


def spawn(spec: AgentSpec, backend: Backend, tools: Sequence[Callable[..., Any]] = ()) -> Any:
    """The agent ``spec`` on a warm host of its tier if the runtime keeps one, else an Agent
    actor of its own (:func:`~actors.agent.spawn_agent`). Either way, use it as a handle."""
    if not tools and (backend.limiter_name, backend.ledger_name) == (LIMITER_NAME, LEDGER_NAME):
        hosts = warm_hosts(spec.tier, backend.namespace)
        if hosts:
            host = hosts[zlib.crc32(spec.name.encode()) % len(hosts)]
            return HostedAgent(host, spec, backend)
    return spawn_agent(spec, backend, tools)


def stop(handle: Any) -> None:
    """Stop an agent :func:`spawn` returned: a hosted one is dropped, an actor is killed."""
    if isinstance(handle, HostedAgent):
        handle.host.close.remote([handle.spec.name])
    else:
        ray.kill(handle, no_restart=True)


_found: dict[tuple[str, str, str], list[Any]] = {}
"""Warm hosts found in this process, by (cluster, namespace, tier): one lookup per process.
Only hosts found are kept: a tier without any is looked up again (one GCS call per spawn)."""


def warm_hosts(tier: Tier, namespace: str) -> list[Any]:
    """Handles of the warm hosts of ``tier``, else a private run's own host (none on a Ray
    that neither ``up`` nor a CLI run prepared)."""
    key = (ray.get_runtime_context().gcs_address, namespace, tier)
    if key not in _found:
        hosts = (_existing([host_name(tier, i) for i in range(MAX_HOSTS_PER_TIER)], namespace)
                 or _existing([RUN_HOST], namespace))
        if not hosts:
            return []
        _found[key] = hosts
    return _found[key]


def _existing(names: Sequence[str], namespace: str) -> list[Any]:
    """Handles of the actors named, up to the first name that has none."""
    found = []
    for name in names:
        try:
            found.append(ray.get_actor(name, namespace=namespace))
        except ValueError:
            break
    return found


def start_hosts(namespace: str, per_tier: int = 1,
                tiers: Sequence[Tier] = TIERS, timeout_s: float = 120.0) -> list[Any]:
    """Get or create ``per_tier`` detached warm hosts of each tier, all at once; wait for them.

    Restarted by Ray if they crash (``max_restarts=-1``; the agents they held are made again on
    their next call, as a restarted Agent actor's would be); never retried by Ray (a call may
    have been billed: the Agent's own loop retries).
    """
    hosts = [_host(host_name(tier, i), namespace, "detached")
             for tier in tiers for i in range(min(per_tier, MAX_HOSTS_PER_TIER))]
    ray.get([h.ready.remote() for h in hosts], timeout=timeout_s)
    return hosts


def start_run_host(namespace: str) -> Any:
    """Create a private Ray's one host, serving every agent of its run (not waited for).

    Why one for every tier: on a Ray that lives for one run, each process the run starts
    (Python, Ray, then the SDK's ~1.2 CPU-seconds of imports) is start-up paid before the
    first call on shared cores; one host pays it once for the run's agents instead of once
    per agent (``docs/performance.md``, "Start-up"). It ends with the driver's job.
    """
    return _host(RUN_HOST, namespace, None)


def _host(name: str, namespace: str, lifetime: str | None) -> Any:
    return ray.remote(AgentHost).options(
        name=name, namespace=namespace, lifetime=lifetime, get_if_exists=True,
        max_restarts=-1, max_task_retries=0, num_cpus=0, max_concurrency=1000,
    ).remote(namespace)
