"""Edge cases of the Agent's call path found in review, each pinned by a test."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import pytest
import ray
from aiohttp import web
from pydantic import BaseModel, SecretStr

from actors.agent import spawn_agent
from actors.errors import ConnectionFailed
from actors.messages import AgentSpec, AskRequest, TextDelta
from actors.retry_policy import RetryPolicy
from actors.tools import Tool
from tests.actors.agent_fixtures import Rig

CANARY = "sk-ant-api03-CANARY-edges"


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


async def _drop_after_one_delta(request: web.Request) -> web.StreamResponse:
    """Start a stream, send one text delta, then cut the connection."""
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "request-id": "req_drop"})
    await response.prepare(request)
    await response.write(_event("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-5-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1}}}))
    await response.write(_event("content_block_start", {
        "type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}}))
    await response.write(_event("content_block_delta", {
        "type": "content_block_delta", "index": 0,
        "delta": {"type": "text_delta", "text": "Hello"}}))
    await asyncio.sleep(0.1)
    assert request.transport is not None
    request.transport.abort()
    return response


@pytest.fixture
def dropping_server() -> Iterator[tuple[str, list[int]]]:
    """A loopback server that breaks every stream after one delta; yields (url, hit counter)."""
    hits: list[int] = []
    loop = asyncio.new_event_loop()
    app = web.Application()

    async def handler(request: web.Request) -> web.StreamResponse:
        hits.append(1)
        return await _drop_after_one_delta(request)

    app.router.add_post("/v1/messages", handler)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", hits
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_a_stream_cut_mid_way_fails_cleanly_without_the_key_and_is_not_replayed(
        rig: Rig, dropping_server: tuple[str, list[int]]) -> None:
    url, hits = dropping_server
    backend = replace(rig.runtime.backend, api_key=SecretStr(CANARY), base_url=url)
    run_id = "edges-drop"
    agent = spawn_agent(AgentSpec(name=f"{run_id}/test/drop", run_id=run_id), backend)
    received = []
    with pytest.raises(ConnectionFailed) as caught:
        for ref in agent.stream.remote(AskRequest(prompt="hi", max_tokens=50)):
            received.append(ray.get(ref))
    ray.get(agent.flush.remote())

    assert received == [TextDelta(text="Hello")]
    assert len(hits) == 1, "text was delivered, so the stream must not be replayed"
    assert CANARY.encode() not in pickle.dumps(caught.value.cause)
    totals = rig.ledger_totals(run_id)
    assert (totals.attempts, totals.errors) == (1, 1)
    assert (totals.input_tokens, totals.output_tokens) == (10, 1)


def test_an_empty_answer_is_not_remembered_so_later_calls_still_work(rig: Rig) -> None:
    def always_a_tool(body: dict[str, Any]) -> Any:
        return [{"type": "tool_use", "name": "lookup", "input": {"city": "Oslo"}}]

    def lookup(city: str) -> str:
        """Weather of a city."""
        return "sunny"

    rig.emulator.set_responder(always_a_tool)
    try:
        agent, _ = rig.agent("haiku", tools=(lookup,), max_turns=1)
        first = ray.get(agent.ask.remote(AskRequest(prompt="weather?", remember=True)))
    finally:
        rig.emulator.set_responder(None)
    second = ray.get(agent.ask.remote(AskRequest(prompt="and now?", remember=True)))
    assert first.text == "" and first.stop_reason == "tool_use"
    assert second.text


def test_the_emulator_actor_starts_one_server_for_concurrent_first_callers(
        ray_session: None) -> None:
    from cluster.emulator_actor import EmulatorServer

    server = ray.remote(EmulatorServer).options(num_cpus=0).remote("fast")
    urls = ray.get([server.base_url.remote() for _ in range(6)])
    assert len(set(urls)) == 1 and urls[0].startswith("http://127.0.0.1:")


def test_a_retry_after_longer_than_the_policy_allows_is_not_waited_for() -> None:
    policy = RetryPolicy(max_retry_after_s=1)
    assert not policy.should_retry(retry=0, status=429, headers={"retry-after": "300"})
    assert policy.should_retry(retry=0, status=429, headers={"retry-after": "0.5"})


class Point(BaseModel):
    x: float
    y: float


async def _distance(p: Point, unit: Literal["m", "km"] = "m") -> str:
    """Distance of a point from the origin."""
    return f"{(p.x ** 2 + p.y ** 2) ** 0.5:g} {unit}"


def test_tools_resolve_postponed_annotations_and_receive_models_as_models() -> None:
    tool = Tool.from_function(_distance)
    schema = tool.schema()["input_schema"]
    assert schema["required"] == ["p"]
    text, failed = asyncio.run(tool.run({"p": {"x": 3, "y": 4}, "unit": "km"}))
    assert (text, failed) == ("5 km", False)
    text, failed = asyncio.run(tool.run({"p": {"x": 3, "y": 4}, "unit": "miles"}))
    assert failed and "invalid arguments for _distance" in text
