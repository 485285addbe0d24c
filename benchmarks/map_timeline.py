"""Where the map phase's time goes beyond the API's latency: a timeline of every chunk's call.

Runs the unlimited case of ``mapreduce.py`` (``--chunks`` chunks, ``--latency`` seconds per
request, ``--in-flight`` at a time) and stamps each chunk's call (wall clock, comparable
between the processes of one machine) at six points: the driver's ``MapperPool.ask``
(``ask``), the ask leaving the driver in an ``ask_batch`` or ``ask`` Ray call (``sent``), the
mapper host starting it (``host_in``), the HTTP call's start and end (``post_in``,
``post_out``: the emulator's latency is in between), the host having the reply (``host_out``)
and the driver's ``ask`` returning it (``reply``). The stamps are taken by wrapping our own
functions in the driver and, through ``__ray_call__``, in each host (nothing of Ray or the SDK
is replaced); so the figures carry a little of the stamping's own cost.

Ideal = waves x latency; each slot of the ``--in-flight`` window runs ``waves`` calls one
after the other, so the wall is about the slowest slot's sum of (``reply - ask``) plus the
gaps before its next ``ask``. The report splits the mean of those into steps (milliseconds
per call, median and p90) and adds the start (map phase to first ask) and the end (last
reply to the answer). ``reducer_ms`` splits the end: the reducer's final call stamped in the
driver (the stream's call, its first and last streamed item, its reply) and in the reducer
(the call reaching it, its HTTP call's start, first and last text delta and end), each in ms
after the last mapper reply. ``--timeline FILE`` writes every chunk's stamps as JSON lines.

Prints ONE JSON line: ``{"bench": "map_timeline", "wall_s", "ideal_s", "steps_ms": {...}}``.

``--itpm 240000`` runs ``mapreduce.py``'s limited case instead (its ideal, from the bucket).

Usage: ``python benchmarks/map_timeline.py [--chunks 2000] [--itpm 0] [--timeline /tmp/t.jsonl]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from mapreduce import BIG, _billed_input, _config, _corpus, _runtime, start_runtime

import cluster
from actors import agent_batch
from actors.limits import TierLimits
from emulator import EmulatorProcess, Limits
from topologies import create_session, mapper_pool, run_context
from topologies.mapreduce import MapReduceTask

STAMPS: dict[str, dict[str, float]] = {}
"""call_id -> stamp name -> time.time(), the driver's stamps."""
REDUCER: dict[str, Any] = {}
"""The reducer's final call: the driver's stamps and, after the session, the reducer's."""


def _install_host_stamps(agent: Any) -> None:
    """Runs inside a host (``__ray_call__``): stamp each ask's start, HTTP call and end."""
    import contextvars

    from actors import api_call

    current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
        "stamps", default=None)
    agent._timeline = stamps = {}
    ask_or_error, send = agent._ask_or_error, api_call.send

    async def stamped_ask(request: Any) -> Any:
        mine = stamps[request.call_id] = {"host_in": time.time(), "host": os.getpid()}
        current.set(mine)
        result = await ask_or_error(request)
        mine["host_out"] = time.time()
        return result

    async def stamped_send(client: Any, params: Any, attempt: Any) -> Any:
        mine = current.get()
        if mine is not None:
            mine["post_in"] = time.time()
        try:
            return await send(client, params, attempt)
        finally:
            if mine is not None:
                mine["post_out"] = time.time()

    agent._ask_or_error, api_call.send = stamped_ask, stamped_send


def _host_stamps(agent: Any) -> dict[str, dict[str, float]]:
    return getattr(agent, "_timeline", {})


def _install_reducer_stamps(agent: Any) -> None:
    """Runs inside the reducer (``__ray_call__``): stamp its streamed call's steps."""
    from actors import api_call

    agent._timeline = stamps = {}
    params, stream = agent._params, api_call.stream

    def stamped_params(*args: Any, **kwargs: Any) -> Any:
        stamps.setdefault("host_in", time.time())
        return params(*args, **kwargs)

    async def stamped_stream(client: Any, call_params: Any, attempt: Any) -> Any:
        stamps["post_in"] = time.time()
        async for delta in stream(client, call_params, attempt):
            stamps.setdefault("first_delta", time.time())
            stamps["last_delta"] = time.time()
            yield delta
        stamps["post_out"] = time.time()

    agent._params, api_call.stream = stamped_params, stamped_stream


def _stamp_driver() -> None:
    """Wrap the pool's ask, the batcher's send and the pool's start and retire."""
    pool_ask, stream, single = (mapper_pool.MapperPool.ask, agent_batch.AskBatcher._stream,
                                agent_batch.AskBatcher._single)
    nodes, retire = mapper_pool.MapperPool.nodes, mapper_pool.MapperPool.retire
    host_stamps: dict[str, dict[str, float]] = {}

    async def ask(self: Any, request: Any) -> Any:
        mine = STAMPS[request.call_id] = {"ask": time.time()}
        reply = await pool_ask(self, request)
        mine["reply"] = time.time()
        return reply

    async def stamped_stream(self: Any, asks: list[Any]) -> None:
        now = time.time()
        for request, _ in asks:
            STAMPS.get(request.call_id, {})["sent"] = now
        await stream(self, asks)

    async def stamped_nodes(self: Any) -> Any:
        await asyncio.gather(*(h.__ray_call__.remote(_install_host_stamps)
                               for h in self.handles.values()))
        return await nodes(self)

    async def stamped_retire(self: Any) -> None:
        for part in await asyncio.gather(*(h.__ray_call__.remote(_host_stamps)
                                           for h in self.handles.values())):
            host_stamps.update(part)
        await retire(self)

    _stamp_reducer()
    agent_batch.AskBatcher._stream = stamped_stream  # type: ignore[method-assign]
    del single  # a lone ask goes through _stream too (it calls _single)
    mapper_pool.MapperPool.ask = ask  # type: ignore[method-assign]
    mapper_pool.MapperPool.nodes = stamped_nodes  # type: ignore[method-assign]
    mapper_pool.MapperPool.retire = stamped_retire  # type: ignore[method-assign]
    STAMPS["_hosts"] = host_stamps  # type: ignore[assignment]


def _stamp_reducer() -> None:
    """Wrap the crew's spawn of the reducer (stamps installed in it), the run's final
    stream (the driver's stamps) and the crew's stop (the reducer's stamps collected)."""
    agent, final, stop = (run_context.Crew.agent, run_context.RunContext._stream,
                          run_context.Crew.stop)

    async def stamped_agent(self: Any, key: str) -> Any:
        handle = await agent(self, key)
        if key == "reducer" and "installed" not in REDUCER:
            REDUCER["installed"] = handle.__ray_call__.remote(_install_reducer_stamps)
        return handle

    async def stamped_final(self: Any, key: str, handle: Any, request: Any, *rest: Any) -> Any:
        REDUCER["stream"] = time.time()
        items = REDUCER["items"] = []
        original = self.emit

        async def emit(event: Any) -> None:
            items.append(time.time())
            await original(event)

        self.emit = emit
        try:
            return await final(self, key, handle, request, *rest)
        finally:
            self.emit = original
            REDUCER["reply"] = time.time()

    async def stamped_stop(self: Any) -> None:
        handle = self.handles.get("reducer")
        if handle is not None and "installed" in REDUCER:
            REDUCER["host"] = await handle.__ray_call__.remote(_host_stamps)
        await stop(self)

    run_context.Crew.agent = stamped_agent  # type: ignore[method-assign]
    run_context.RunContext._stream = stamped_final  # type: ignore[method-assign]
    run_context.Crew.stop = stamped_stop  # type: ignore[method-assign]


async def _run(runtime: cluster.Runtime, args: argparse.Namespace) -> dict[str, float]:
    session = create_session("mapreduce", runtime=runtime, config=_config(
        args.in_flight, tempfile.mkdtemp(prefix="mr-timeline-")))
    marks: dict[str, float] = {}
    async with session:
        async for event in session.run(MapReduceTask(question="What did the gauge read?",
                                                     text=_corpus(args.chunks))):
            if event.kind == "phase":
                marks.setdefault(event.name, time.time())
            elif event.kind == "run_completed":
                marks["done"] = time.time()
    return marks


def _q(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    return {"p50": round(statistics.median(values) * 1000, 2),
            "p90": round(values[int(len(values) * 0.9)] * 1000, 2),
            "mean": round(statistics.fmean(values) * 1000, 2)}


def _report(marks: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    hosts: dict[str, dict[str, float]] = STAMPS.pop("_hosts")  # type: ignore[assignment]
    calls = []
    for call_id, mine in STAMPS.items():
        calls.append({"call_id": call_id, **mine, **hosts.get(call_id, {})})
    calls.sort(key=lambda c: c["ask"])
    steps = [("ask", "sent", "batcher hold (driver)"),
             ("sent", "host_in", "to the host (Ray, host loop)"),
             ("host_in", "post_in", "host before HTTP (pipeline, lease)"),
             ("post_in", "post_out", "HTTP call minus latency"),
             ("post_out", "host_out", "host after HTTP (record, reply)"),
             ("host_out", "reply", "back to the driver (hold, Ray, driver loop)")]
    report: dict[str, Any] = {}
    for start, end, name in steps:
        spans = [c[end] - c[start] for c in calls if start in c and end in c]
        if start == "post_in":
            spans = [s - args.latency for s in spans]
        report[name] = _q(spans)
    # The slot's idle time: the i-th reply frees a slot that the (i + in_flight)-th ask fills.
    asks = [c["ask"] for c in calls]
    replies = sorted(c["reply"] for c in calls if "reply" in c)
    refill = [asks[i + args.in_flight] - replies[i]
              for i in range(len(asks) - args.in_flight)]
    report["refill: reply to the next ask (driver)"] = _q(refill)
    waves = math.ceil(args.chunks / args.in_flight)
    wall = marks["done"] - marks["map"]
    return {"bench": "map_timeline", "chunks": args.chunks, "wall_s": round(wall, 3),
            "ideal_s": round((waves + 1) * args.latency, 2),
            "wall_over_ideal": round(wall / ((waves + 1) * args.latency), 3),
            "start_ms": round((asks[0] - marks["map"]) * 1000, 1),
            "first_wave_ms": _first_wave(calls, args.in_flight),
            "map_ms": round((replies[-1] - asks[0]) * 1000, 1),
            "map_per_wave_ms": round((replies[-1] - asks[0]) * 1000 / waves, 2),
            "end_ms": round((marks["done"] - replies[-1]) * 1000, 1),
            "end_marks_ms": {k: round((t - replies[-1]) * 1000, 1) for k, t in marks.items()
                             if k != "map"},
            "reducer_ms": _reducer(replies[-1]),
            "steps_ms": report, "calls": calls if args.timeline else None}


def _reducer(last_reply: float) -> dict[str, float]:
    """The final call's steps, in ms from the last mapper reply: the driver's stream call,
    the reducer's start of it, its HTTP call (start, first and last text delta, end), the
    driver's first and last streamed item and its reply."""
    host = REDUCER.get("host") or {}
    items = REDUCER.get("items") or [math.nan]
    marks = {"stream": REDUCER.get("stream", math.nan), **host,
             "first_item": items[0], "last_item": items[-1],
             "reply": REDUCER.get("reply", math.nan), "items": len(items)}
    return {k: (v if k == "items" else round((v - last_reply) * 1000, 1))
            for k, v in marks.items()}


def _first_wave(calls: list[dict[str, Any]], in_flight: int) -> dict[str, float]:
    """The first ``in_flight`` calls (cold: first grants, connections, requests), from the
    first ask: when their HTTP sends started (first, last) and when their last reply came."""
    first = calls[:in_flight]
    t0 = first[0]["ask"]
    sends = sorted(c["post_in"] for c in first if "post_in" in c)
    ms = {"first_send": sends[0] if sends else math.nan,
          "last_send": sends[-1] if sends else math.nan,
          "last_reply": max(c.get("reply", math.nan) for c in first)}
    return {k: round((t - t0) * 1000, 1) for k, t in ms.items()}


async def _main(base: cluster.Runtime, args: argparse.Namespace) -> dict[str, Any]:
    _stamp_driver()
    if not args.itpm:
        with EmulatorProcess(latency_s=args.latency) as emu:
            marks = await _run(_runtime(base, emu.base_url), args)
        return _report(marks, args)
    limits = TierLimits(rpm=BIG, itpm=args.itpm, otpm=BIG, max_concurrency=10_000)
    with EmulatorProcess(latency_s=args.latency,
                         limits_by_tier={"haiku": Limits(itpm=args.itpm)}) as emu:
        await base.limiter.set_limits.remote("haiku", limits)
        marks = await _run(_runtime(base, emu.base_url), args)
        billed = _billed_input(emu.stats(), "claude-haiku-5-5")
    report = _report(marks, args)
    bucket_s = max(0.0, (billed - args.itpm) / (args.itpm / 60)) + args.latency
    report["ideal_s"] = round(max(bucket_s, report["ideal_s"] - args.latency) + args.latency, 2)
    report["wall_over_ideal"] = round(report["wall_s"] / report["ideal_s"], 3)
    return report


def main() -> None:
    """Parse the knobs, run the case, print one JSON line (and the timeline, if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2_000)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--itpm", type=int, default=0,
                        help="the limited case: this input-tokens/min limit on the mappers")
    parser.add_argument("--timeline", type=Path, default=None)
    args = parser.parse_args()
    base = start_runtime()
    try:
        report = asyncio.run(_main(base, args))
    finally:
        cluster.shutdown()
    calls = report.pop("calls")
    if args.timeline is not None:
        args.timeline.write_text("".join(json.dumps(c) + "\n" for c in calls))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
