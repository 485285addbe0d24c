"""A small pool of mapper host actors spread over the cluster, each serving many mappers at once.

Never one actor per chunk: an Agent actor costs about 95 MB and up to a second to start
(``docs/ray-facts.md`` §1), while one actor runs hundreds of concurrent calls on its event loop and
shares one HTTP client. So a run gets a few hosts, spread round-robin over the nodes (a soft
affinity each: see :func:`_placements`), and every chunk is a *logical* mapper
(``role="mapper"``, its own system prompt) sent to the least busy host, batched with the other
asks of the same moment (one Ray call for many: ``actors/agent_batch.py``). The caller bounds
the calls in flight; each host's limiter lease and the cluster's RateLimiter bound what reaches
the API.

A host can die with its node. Its calls then fail with a ``RayActorError`` while the Agent
restarts elsewhere (``max_restarts``); the pool sets that host aside for a moment and sends the
chunk to another one. That call may have been billed before the node died (Ray cannot say), so
a lost node can cost a chunk twice but never loses one (``docs/reliability.md`` §2).

Example:
    >>> pool = MapperPool.spawn(backend, run_id="r1", tier="haiku", model="claude-haiku-5-5",
    ...                         hosts=4)                                     # doctest: +SKIP
    >>> reply = await pool.ask(AskRequest(prompt="chunk...", role="mapper"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.agent import Backend, spawn_agent
from actors.agent_batch import AskBatcher
from actors.errors import AgentLost, AgentUnavailable
from actors.message_batches import BatchResult
from actors.messages import AgentSpec, AskRequest, Reply
from actors.tiers import Tier
from topologies.errors import TopologyError
from topologies.run_context import actor_name, unwrap

__all__ = ["MapperPool", "default_host_count"]

log = logging.getLogger("raytroupe")

TOPOLOGY = "mapreduce"
_SET_ASIDE_S = 2.0
"""How long a host whose call died is skipped (its restart takes about that, or its node's
death is detected: ``docs/ray-facts.md`` §4, 6.7 s with fast health checks)."""
_MAX_HOSTS = 16
_SETTLE_S = 10.0
"""Most seconds a flush waits for cancelled calls to end on their hosts."""


def default_host_count(max_in_flight: int) -> int:
    """One host per alive node, at least 2 (two processes use two cores), at most 16.

    Example:
        >>> default_host_count(1)
        1
    """
    try:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception:  # Ray not started yet (a config being described, not run)
        nodes = 1
    return max(1, min(max_in_flight, _MAX_HOSTS, max(2, nodes)))


class _Host:
    __slots__ = ("batcher", "handle", "in_flight", "name", "set_aside_until")

    def __init__(self, name: str, handle: Any) -> None:
        self.name, self.handle = name, handle
        self.batcher = AskBatcher(handle)
        self.in_flight = 0
        self.set_aside_until = 0.0


class MapperPool:
    """Mapper host actors and the routing of chunk calls to them.

    Build it with :meth:`spawn`. ``ask`` is safe to call from many tasks at once.
    """

    def __init__(self, hosts: list[_Host]) -> None:
        if not hosts:
            raise ValueError("a mapper pool needs at least one host")
        self._hosts = hosts
        self.host_failures = 0
        """Calls lost with their host (each was sent again to another one)."""

    def __repr__(self) -> str:
        return f"MapperPool({[h.name for h in self._hosts]})"

    @classmethod
    def spawn(cls, backend: Backend, *, run_id: str, tier: Tier, model: str,
              hosts: int) -> MapperPool:
        """Create ``hosts`` Agent actors named ``run/mapreduce/mapper-i``, spread over nodes."""
        members = []
        for i, placement in enumerate(_placements(hosts)):
            name = actor_name(run_id, TOPOLOGY, f"mapper_{i + 1}")
            spec = AgentSpec(name=name, role="mapper", tier=tier, model=model, run_id=run_id,
                             topology=TOPOLOGY)
            members.append(_Host(name, spawn_agent(spec, backend,
                                                   scheduling_strategy=placement)))
        return cls(members)

    @property
    def handles(self) -> dict[str, Any]:
        """Actor handles by actor name."""
        return {h.name: h.handle for h in self._hosts}

    async def ask(self, request: AskRequest) -> Reply:
        """Send one mapper call to the least busy host; move it to another if its host dies.

        Raises:
            BudgetExceeded, CallFailed, PromptTooLongError: unwrapped from Ray's error.
            TopologyError: every try lost its host.
        """
        # Batched with the other asks of this turn of the loop: one Ray call for many
        # (``actors/agent_batch.py``); a cancelled batch is cancelled on the host too.
        return await self._on_a_host(lambda host: host.batcher.ask(request))

    async def submit_batch(self, items: list[tuple[str, AskRequest]]) -> str:
        """Send ``items`` as one Message Batch through a live host; return the batch id."""
        return await self._on_a_host(lambda h: h.handle.submit_batch.remote(items))

    async def collect_batch(self, batch_id: str, items: list[tuple[str, AskRequest]]
                            ) -> list[BatchResult]:
        """Wait for a batch's results (recorded by the host that collects them).

        The batch lives at the API, not in a host: if the collecting host dies, another one
        collects the same batch id, and nothing is paid twice.
        """
        return await self._on_a_host(lambda h: h.handle.collect_batch.remote(batch_id, items))

    async def _on_a_host(self, call: Callable[[_Host], Any]) -> Any:
        """Run ``call`` on the least busy host, moving to another if its host dies.

        Raises:
            Our error (budget, call failed...), unwrapped from Ray's.
            TopologyError: every try lost its host.
        """
        tries = len(self._hosts) + 2
        for _ in range(tries):
            host = await self._pick()
            host.in_flight += 1
            try:
                return await call(host)
            except (RayActorError, AgentLost, AgentUnavailable) as exc:  # batcher: our own
                self.host_failures += 1
                host.set_aside_until = time.monotonic() + _SET_ASIDE_S
                log.warning("mapper host %s lost a call (%s); sending it to another host",
                            host.name, type(exc).__name__)
            except Exception as exc:
                raise unwrap(exc) from None
            finally:
                host.in_flight -= 1
        raise TopologyError(f"a mapper call lost its host {tries} times in a row; is the "
                            "cluster losing nodes? Re-run to resume from the stored chunks "
                            "(and batch ids)")

    async def nodes(self) -> dict[str, str]:
        """The node id each host runs on, by actor name (waits until each host is up)."""
        ids = await asyncio.gather(*(h.handle.__ray_call__.remote(_node_id)
                                     for h in self._hosts))
        return {h.name: node for h, node in zip(self._hosts, ids, strict=True)}

    async def warm(self) -> None:
        """Each host pays its first call's one-time costs now (``Agent.warm``): the first
        wave's ~25 calls per host would each wait on them. A host that fails here is left to
        its first call."""
        results = await asyncio.gather(*(h.handle.warm.remote() for h in self._hosts),
                                       return_exceptions=True)
        for host, result in zip(self._hosts, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("mapper host %s could not warm up: %s", host.name, result)

    async def retire(self) -> None:
        """Before :meth:`stop`: every host's Ledger records acknowledged and its limiter stock
        given back (``Agent.retire``), skipping dead hosts.

        Calls cancelled on a host (a Ctrl-C) record their attempts as the cancellation
        reaches them, after ``ray.cancel`` returned: wait for that first, or the records
        would die with the host when :meth:`stop` kills it. Stock killed with a host would be
        missing from the cluster's buckets until its lease's TTL, for every job.
        """
        await asyncio.gather(*(h.batcher.settled(_SETTLE_S) for h in self._hosts))
        results = await asyncio.gather(*(h.handle.retire.remote() for h in self._hosts),
                                       return_exceptions=True)
        for host, result in zip(self._hosts, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("mapper host %s could not flush: %s", host.name, result)

    def stop(self) -> None:
        """Stop every host (after ``retire``): idle actors still cost memory and CPU."""
        for host in self._hosts:
            ray.kill(host.handle, no_restart=True)

    async def _pick(self) -> _Host:
        """The least busy host not set aside; if all are, wait for the first to come back."""
        now = time.monotonic()
        ready = [h for h in self._hosts if h.set_aside_until <= now]
        if not ready:
            first = min(self._hosts, key=lambda h: h.set_aside_until)
            await asyncio.sleep(first.set_aside_until - now)
            ready = [first]
        return min(ready, key=lambda h: h.in_flight)


def _placements(hosts: int) -> list[Any]:
    """One scheduling strategy per host: round-robin over the alive nodes, workers first.

    Ray's ``SPREAD`` is best effort: on a loaded 2-core box it once put all three zero-CPU
    hosts of a 4-node test cluster on one node. So each host gets a *soft* affinity to a node
    of its own (soft: if that node dies, Ray restarts the host elsewhere). Nodes with CPUs come
    first, so a head started with ``--num-cpus=0`` (keep work off it) gets a host only when
    there are more hosts than workers.
    """
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception:  # not connected: let Ray place them
        nodes = []
    if len(nodes) < 2:
        return ["SPREAD"] * hosts
    nodes.sort(key=lambda n: (n.get("Resources", {}).get("CPU", 0) <= 0, n["NodeID"]))
    return [NodeAffinitySchedulingStrategy(nodes[i % len(nodes)]["NodeID"], soft=True)
            for i in range(hosts)]


def _node_id(_agent: Any) -> str:
    """Runs inside a host (``__ray_call__``): the id of the node it lives on."""
    return ray.get_runtime_context().get_node_id()
