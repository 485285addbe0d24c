"""How many Messages requests per second the emulator serves, whole and streamed.

The emulator runs in a subprocess (``EmulatorProcess``, latency 0, no limits) so it has its own
GIL; 64 concurrent raw aiohttp clients with keep-alive drive it for a bounded time, first with
non-streaming requests, then with ``stream: true`` (each stream read to its end). Each case is
warmed up, then measured over a few rounds; the mean and spread are reported, with the
emulator's own request count as a cross-check that every request was served.

Prints ONE JSON line:
``{"bench": "emulator_throughput", "rps_json": ..., "rps_stream": ..., ...}``

Usage: ``python benchmarks/emulator_throughput.py [--clients 64] [--seconds 3] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp

from emulator import EmulatorProcess

MODEL = "claude-haiku-5-5"
PROMPT = ("Summarise in three bullet points why an actor model suits a fleet of LLM agents "
          "that share one rate limit and one budget.")


def _body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 256, "stream": stream,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()


async def _client(session: aiohttp.ClientSession, url: str, body: bytes, stop_at: float,
                  counts: dict[str, int]) -> None:
    """One client: send, read the whole reply, repeat until ``stop_at``."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        async with session.post(url, data=body) as response:
            await response.read()
            counts["ok" if response.status == 200 else "failed"] += 1


async def _round(base_url: str, api_key: str, *, stream: bool, clients: int,
                 seconds: float) -> dict[str, float]:
    """Drive the emulator with ``clients`` keep-alive clients for ``seconds``."""
    headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01",
               "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    counts = {"ok": 0, "failed": 0}
    async with aiohttp.ClientSession(base_url, headers=headers, connector=connector) as session:
        loop = asyncio.get_running_loop()
        started = loop.time()
        body = _body(stream)
        await asyncio.gather(*(_client(session, "/v1/messages", body, started + seconds, counts)
                               for _ in range(clients)))
        elapsed = loop.time() - started
    return {"rps": counts["ok"] / elapsed, "failed": counts["failed"], "ok": counts["ok"]}


async def _case(emu: EmulatorProcess, *, stream: bool, clients: int, seconds: float,
                rounds: int) -> dict[str, Any]:
    """Warm up once, then measure ``rounds`` rounds; mean and spread of requests/s."""
    await _round(emu.base_url, emu.api_key, stream=stream, clients=clients, seconds=1.0)
    results = [await _round(emu.base_url, emu.api_key, stream=stream, clients=clients,
                            seconds=seconds) for _ in range(rounds)]
    rates = [r["rps"] for r in results]
    return {"mean": statistics.fmean(rates),
            "stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
            "failed": sum(int(r["failed"]) for r in results),
            "ok": sum(int(r["ok"]) for r in results)}


async def _main(clients: int, seconds: float, rounds: int) -> dict[str, Any]:
    with EmulatorProcess(latency_s=0.0) as emu:
        started = time.perf_counter()
        whole = await _case(emu, stream=False, clients=clients, seconds=seconds, rounds=rounds)
        streamed = await _case(emu, stream=True, clients=clients, seconds=seconds, rounds=rounds)
        wall = time.perf_counter() - started
        served = emu.stats()["responses_by_status"].get("200", 0)
    return {
        "bench": "emulator_throughput",
        "rps_json": round(whole["mean"], 1),
        "rps_json_stdev": round(whole["stdev"], 1),
        "rps_stream": round(streamed["mean"], 1),
        "rps_stream_stdev": round(streamed["stdev"], 1),
        "clients": clients,
        "seconds_per_round": seconds,
        "rounds": rounds,
        "failed": whole["failed"] + streamed["failed"],
        # Warm-up rounds included: the emulator's bill must cover every reply the clients read.
        "served_200_at_least_measured": served >= whole["ok"] + streamed["ok"],
        "wall_s": round(wall, 1),
    }


def main() -> None:
    """Parse the knobs, run both cases, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.clients, args.seconds, args.rounds))))


if __name__ == "__main__":
    main()
