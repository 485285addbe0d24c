"""Typed channels on real Ray: checked at send, ordered, bounded, fan-out/fan-in, forwarding."""

from __future__ import annotations

import asyncio
import random

import pytest
import ray

from actors.errors import MessageTypeError
from tests.polling import wait_for_async
from tests.topologies.channel_actors import Inbox, Memo, Note, Receipt, Stamper
from topologies.channel import Channel, fan_in, fan_out
from topologies.errors import ChannelClosed

pytestmark = pytest.mark.asyncio


async def test_a_wrong_type_is_refused_before_anything_is_delivered(ray_session: None) -> None:
    inbox = Inbox.remote()
    channel = Channel("planner->inbox", Note, inbox.receive, reply_type=Receipt)

    with pytest.raises(MessageTypeError) as caught:
        await channel.send(Memo(text="hello"))  # type: ignore[arg-type]
    message = str(caught.value)
    assert "'planner->inbox'" in message and "Note" in message and "Memo" in message
    with pytest.raises(MessageTypeError, match="carries Note, got dict"):
        await channel.send({"seq": 1})  # type: ignore[arg-type]
    assert channel.sent == 0
    assert (await inbox.state.remote())[0] == []


async def test_replies_come_back_in_send_order_and_processing_is_ordered_at_one_in_flight(
        ray_session: None) -> None:
    inbox = Inbox.remote()
    strict = Channel("strict", Note, inbox.receive, max_in_flight=1)
    for seq in range(30):
        await strict.send(Note(seq=seq))
    await strict.close()
    replies = [r.seq async for r in strict.replies()]
    assert replies == list(range(30))
    assert (await inbox.state.remote())[0] == list(range(30))
    with pytest.raises(ChannelClosed):
        await strict.send(Note(seq=99))


async def test_send_waits_when_max_in_flight_are_unanswered(ray_session: None) -> None:
    inbox = Inbox.remote(gated=True)
    channel = Channel("bounded", Note, inbox.receive, max_in_flight=3)

    async def produce() -> None:
        for seq in range(10):
            await channel.send(Note(seq=seq))

    producer = asyncio.create_task(produce())

    async def three_held() -> bool:
        return (await inbox.state.remote())[1] == 3

    await wait_for_async(three_held, "three messages held by the consumer", timeout_s=10)
    assert channel.sent == 3 and not producer.done()  # the producer is blocked in send
    await inbox.open.remote()
    await asyncio.wait_for(producer, 10)
    await channel.close()
    assert [r.seq async for r in channel.replies()] == list(range(10))
    assert channel.peak_in_flight == 3


async def test_a_reply_its_sender_took_is_not_kept_for_replies(ray_session: None) -> None:
    inbox = Inbox.remote()
    channel = Channel("drained", Note, inbox.receive, reply_type=Receipt, max_in_flight=4)
    for seq in range(5):
        assert (await channel.request(Note(seq=seq))).seq == seq
    assert channel.unclaimed == 0  # a channel used through request() holds nothing
    await channel.send(Note(seq=5))
    assert channel.unclaimed == 1
    await channel.close()
    assert [r.seq async for r in channel.replies()] == [5]
    assert channel.unclaimed == 0


async def test_fan_out_shares_one_payload_and_fan_in_merges_replies(ray_session: None) -> None:
    inboxes = [Inbox.remote() for _ in range(3)]
    channels = [Channel(f"broadcast-{i}", Note, box.receive) for i, box in enumerate(inboxes)]
    big = Note(seq=7, body="x" * 1_000_000)

    deliveries = await fan_out(channels, big)
    receipts = [r async for r in fan_in(deliveries)]

    assert sorted(r.size for r in receipts) == [1_000_000] * 3
    assert [await box.sizes_seen.remote() for box in inboxes] == [[1_000_000]] * 3
    with pytest.raises(MessageTypeError):
        await fan_out(channels, Memo(text="no"))  # type: ignore[arg-type]


async def test_a_typed_reply_is_forwarded_to_the_next_stage_unfetched(ray_session: None) -> None:
    stamper, inbox = Stamper.remote(), Inbox.remote()
    memos = Channel("in->stamper", Memo, stamper.stamp, reply_type=Note)
    notes = Channel("stamper->inbox", Note, inbox.receive, reply_type=Receipt)
    other = Channel("in->inbox", Memo, inbox.receive)

    stamped = await memos.send(Memo(text="abcd"))
    receipt = await (await notes.send(stamped))  # the Note never visits the driver
    assert receipt == Receipt(seq=4, size=4)
    untyped = await other.send(Memo(text="x"))
    with pytest.raises(MessageTypeError, match="got an untyped reply"):
        await notes.send(untyped)
    with pytest.raises(MessageTypeError, match="carries Memo, got Note"):
        await memos.send(await memos.send(Memo(text="again")))


async def test_many_producers_each_keep_their_order_under_random_delays(
        ray_session: None) -> None:
    inbox = Inbox.remote()
    channel = Channel("shared", Note, inbox.receive, max_in_flight=4)
    sent: list[int] = []

    async def producer(base: int) -> None:
        for i in range(10):
            if random.random() < 0.5:
                await asyncio.sleep(0)  # let the other producer interleave
            sent.append(base + i)
            await channel.send(Note(seq=base + i))

    await asyncio.gather(producer(0), producer(100))
    await channel.close()
    replies = [r.seq async for r in channel.replies()]
    assert replies == sent  # replies follow the global send order
    assert [s for s in replies if s < 100] == list(range(10))
    ray.kill(inbox)
