"""Message Batches end to end through the real SDK: create, poll, list, results, cancel, delete."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

import anthropic
import pytest
from anthropic import Anthropic
from anthropic.types.messages import MessageBatch

from emulator import EmulatorHandle, ScriptedError, run_emulator
from emulator.batches import WORKERS
from tests.polling import wait_for

T = TypeVar("T")
HAIKU = "claude-haiku-5-5"


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": HAIKU, "max_tokens": 200,
            "messages": [{"role": "user", "content": text}], **extra}


def ended(client: Anthropic, batch_id: str) -> MessageBatch:
    return wait_for(lambda: (b := client.messages.batches.retrieve(batch_id)).processing_status
                      == "ended" and b)


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    with run_emulator(batch_delay_s=0.0, latency_s=0.0) as handle:
        yield handle


def sdk(emu: EmulatorHandle, key: str | None = None) -> Anthropic:
    return Anthropic(base_url=emu.base_url, api_key=key or emu.api_key, max_retries=0,
                     _strict_response_validation=True)


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[Anthropic]:
    with sdk(emu) as c:
        yield c


def test_a_batch_runs_to_the_end_with_succeeded_and_errored_results(
        client: Anthropic, emu: EmulatorHandle) -> None:
    requests = [{"custom_id": "first", "params": ask("Name a prime number.")},
                {"custom_id": "second", "params": ask("Name a colour.")},
                {"custom_id": "broken", "params": {"model": HAIKU, "messages": []}}]
    created = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.model_dump() == {
        "processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    assert created.results_url is None and created.ended_at is None
    assert created.expires_at - created.created_at == timedelta(hours=24)

    done = ended(client, created.id)
    assert done.request_counts.model_dump() == {
        "processing": 0, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 0}
    assert done.ended_at is not None and done.ended_at >= done.created_at
    assert done.results_url == f"{emu.base_url}/v1/messages/batches/{done.id}/results"

    results = {r.custom_id: r.result for r in client.messages.batches.results(done.id)}
    assert set(results) == {"first", "second", "broken"}
    for name in ("first", "second"):
        result = results[name]
        assert result.type == "succeeded"
        assert result.message.content[0].type == "text"
        assert result.message.usage.service_tier == "batch"
    broken = results["broken"]
    assert broken.type == "errored"
    assert broken.error.error.type == "invalid_request_error"
    assert broken.error.error.message.startswith("messages:")


def test_batches_are_billed_at_half_price(client: Anthropic, emu: EmulatorHandle) -> None:
    params = ask("Explain token buckets in two sentences.")
    live = client.messages.create(**params)
    live_cost = Decimal(emu.stats()["billed"][HAIKU]["cost_usd"])
    assert live_cost > 0
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    ended(client, batch.id)
    (row,) = client.messages.batches.results(batch.id)
    assert row.result.type == "succeeded"
    assert row.result.message.usage.output_tokens == live.usage.output_tokens
    billed = emu.stats()["billed"][HAIKU]
    assert billed["batch_requests"] == 1
    assert Decimal(billed["cost_usd"]) - live_cost == live_cost / 2


def test_cancel_stops_what_has_not_started(emu: EmulatorHandle, client: Anthropic) -> None:
    gate: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
    entered: list[str] = []

    async def gatekeeper(body: dict[str, Any]) -> str:
        if not gate:  # made on the emulator's loop, the one that waits on it
            gate.append((asyncio.get_running_loop(), asyncio.Event()))
        text = body["messages"][0]["content"]
        entered.append(text)
        await gate[0][1].wait()
        if text == "fail":
            raise ScriptedError("overloaded_error")
        return "done"

    emu.set_responder(gatekeeper)
    held = ["hold"] * (WORKERS - 1) + ["fail"]
    requests = [{"custom_id": f"r{i}", "params": ask(text)}
                for i, text in enumerate([*held, "queued", "queued"])]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    wait_for(lambda: len(entered) == WORKERS, "every worker busy, two requests queued")

    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == WORKERS + 2
    loop, release = gate[0]
    loop.call_soon_threadsafe(release.set)

    done = ended(client, batch.id)
    assert done.request_counts.model_dump() == {
        "processing": 0, "succeeded": WORKERS - 1, "errored": 1, "canceled": 2, "expired": 0}
    kinds = {r.custom_id: r.result.type for r in client.messages.batches.results(batch.id)}
    assert kinds[f"r{WORKERS}"] == kinds[f"r{WORKERS + 1}"] == "canceled"
    assert kinds[f"r{WORKERS - 1}"] == "errored"
    assert emu.stats()["batches"]["canceled"] == 2


def test_cancel_before_processing_cancels_everything() -> None:
    with run_emulator(batch_delay_s=60.0) as emu, sdk(emu) as client:
        batch = client.messages.batches.create(
            requests=[{"custom_id": "a", "params": ask("hi")}])  # type: ignore[list-item]
        client.messages.batches.cancel(batch.id)
        done = ended(client, batch.id)
        assert done.request_counts.canceled == 1
        (row,) = client.messages.batches.results(batch.id)
        assert row.result.type == "canceled"
        assert emu.stats()["billed"] == {}


def test_unprocessed_requests_expire() -> None:
    with run_emulator(batch_delay_s=60.0, batch_expire_s=0.2) as emu, sdk(emu) as client:
        batch = client.messages.batches.create(
            requests=[{"custom_id": "a", "params": ask("hi")},  # type: ignore[list-item]
                      {"custom_id": "b", "params": ask("ho")}])
        assert batch.expires_at - batch.created_at == timedelta(seconds=0.2)
        done = ended(client, batch.id)
        assert done.request_counts.expired == 2
        assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"expired"}


def test_list_pages_newest_first(client: Anthropic) -> None:
    ids = [client.messages.batches.create(
        requests=[{"custom_id": "x", "params": ask(f"n{i}")}]).id  # type: ignore[list-item]
        for i in range(5)]
    newest_first = ids[::-1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first  # auto-pages
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert (page.has_more, page.first_id, page.last_id) == (True, ids[4], ids[3])
    last = client.messages.batches.list(limit=2, after_id=ids[1])
    assert ([b.id for b in last.data], last.has_more) == ([ids[0]], False)
    before = client.messages.batches.list(limit=2, before_id=ids[1])
    assert ([b.id for b in before.data], before.has_more) == ([ids[3], ids[2]], True)


def test_batches_belong_to_the_key_that_created_them(
        emu: EmulatorHandle, client: Anthropic) -> None:
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": ask("hi")}])
    with sdk(emu, key="sk-someone-else") as other:
        assert list(other.messages.batches.list()) == []
        with pytest.raises(anthropic.NotFoundError):
            other.messages.batches.retrieve(batch.id)


def test_delete_only_once_ended() -> None:
    with run_emulator(batch_delay_s=60.0) as emu, sdk(emu) as client:
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": ask("x")}])
        with pytest.raises(anthropic.BadRequestError, match="in progress"):
            client.messages.batches.delete(batch.id)
        client.messages.batches.cancel(batch.id)
        ended(client, batch.id)
        deleted = client.messages.batches.delete(batch.id)
        assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch.id)
        assert emu.stats()["batches"]["deleted"] == 1


@pytest.mark.parametrize(("requests", "complaint"), [
    ([], "requests"),
    ([{"custom_id": "a", "params": ask("x")}, {"custom_id": "a", "params": ask("y")}],
     "duplicate custom_id 'a'"),
    ([{"custom_id": "has space", "params": ask("x")}], "requests.0.custom_id"),
    ([{"custom_id": "x" * 65, "params": ask("x")}], "requests.0.custom_id"),
    ([{"custom_id": "a"}], "requests.0.params"),
    ([{"custom_id": "a", "params": ask("x", stream=True)}], "cannot be streamed"),
])
def test_create_refuses_malformed_bodies(client: Anthropic, requests: list[Any],
                                         complaint: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)
    assert complaint in caught.value.message
    assert caught.value.request_id and caught.value.request_id.startswith("req_")


def test_results_before_the_end_are_refused() -> None:
    with run_emulator(batch_delay_s=60.0) as emu, sdk(emu) as client:
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": ask("x")}])
        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            client.messages.batches.results(batch.id)  # the SDK looks before it asks
        with pytest.raises(anthropic.BadRequestError, match="still in_progress"):
            client.get(f"/v1/messages/batches/{batch.id}/results", cast_to=object)


def test_stats_count_batches_and_requests(client: Anthropic, emu: EmulatorHandle) -> None:
    batch = client.messages.batches.create(requests=[
        {"custom_id": "a", "params": ask("x")}, {"custom_id": "b", "params": ask("y")}])
    ended(client, batch.id)
    stats = emu.stats()["batches"]
    assert (stats["created"], stats["requests"], stats["succeeded"]) == (1, 2, 2)
    emu.reset()
    assert emu.stats()["batches"]["created"] == 0
