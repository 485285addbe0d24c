"""A non-streaming call built once per client (``actors/messages_post.py``) is the SDK's call.

Against the emulator over real HTTP, with the real SDK: the bytes and headers on the wire are
``messages.create``'s, and every failure is translated as the SDK's own path translates it.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import pickle
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import pytest
import pytest_asyncio
from aiohttp import web

from actors import api_call
from actors.api_call import Attempt
from actors.errors import ConnectionFailed, Overloaded, RateLimited, RequestRejected
from actors.messages_post import MessagesPost, pooled_client
from emulator.app import build_app
from emulator.config import EmulatorConfig
from emulator.ratelimits import Limits
from emulator.responders import ScriptedError
from emulator.state import STATE

pytestmark = pytest.mark.asyncio

KEY = "sk-ant-api03-CANARY-messages-post"
PARAMS: dict[str, Any] = {
    "model": "claude-haiku-5-5", "max_tokens": 20, "stop_sequences": ["\n\n"],
    "system": [{"type": "text", "text": "Be brief. Ünïcode ✓"}],
    "messages": [{"role": "user", "content": "héllo, \"world\" ✓"}]}


@dataclass
class Served:
    """An app on a loopback port, and what it received: (raw headers, body) per request."""

    url: str
    app: web.Application
    runner: web.AppRunner
    seen: list[tuple[list[tuple[bytes, bytes]], bytes]] = field(default_factory=list)


async def _serve(app: web.Application) -> Served:
    served: Served

    async def capture(request: web.Request, _response: web.StreamResponse) -> None:
        if request.path == "/v1/messages":
            served.seen.append((list(request.raw_headers), await request.read()))

    app.on_response_prepare.append(capture)
    runner = web.AppRunner(app, shutdown_timeout=0.2)  # a slow reply is not waited for
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    served = Served(f"http://127.0.0.1:{runner.addresses[0][1]}", app, runner)
    return served


@pytest_asyncio.fixture
async def emulator() -> AsyncIterator[Served]:
    served = await _serve(build_app(EmulatorConfig(latency_s=0, limits=Limits(rpm=10_000))))
    yield served
    await served.runner.cleanup()


def _respond(served: Served, responder: Callable[[dict[str, Any]], Any] | None) -> None:
    served.app[STATE].responders.set(responder)


@pytest_asyncio.fixture
async def posts() -> AsyncIterator[Callable[[str, float], MessagesPost]]:
    """Makes an agent's client and post for a URL (closed after the test)."""
    made: list[MessagesPost] = []

    def make(url: str, timeout_s: float = 600.0) -> MessagesPost:
        made.append(MessagesPost(pooled_client(KEY, url, timeout_s)))
        return made[-1]

    yield make
    for post in made:
        await post.client.close()


async def _warm(post: MessagesPost) -> MessagesPost:
    """The post after its client's first call (the SDK's path), so later calls go direct."""
    first = await api_call.send(post, PARAMS, Attempt())
    assert first.error is None and post.direct
    return post


def _host_named_alike(wire: tuple[list[tuple[bytes, bytes]], bytes]
                      ) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """A request as seen, but with ``Host`` spelt as httpx does: aiohttp writes that header
    itself (``Host``, from the URL it sends to, as after a redirect it must), httpx ``host``;
    header names are case-insensitive (RFC 9110 §5.1)."""
    raw, body = wire
    return [(b"host" if k.lower() == b"host" else k, v) for k, v in raw], body


def _no_key(*things: object) -> None:
    for thing in things:
        assert KEY not in repr(thing) and KEY not in str(thing)
    assert KEY.encode() not in pickle.dumps([t for t in things if isinstance(t, Exception)])


async def test_a_call_sends_what_messages_create_sends_header_for_header_byte_for_byte(
        emulator: Served, posts: Callable[..., MessagesPost]) -> None:
    post = posts(emulator.url)
    reference = await post.client.messages.create(**PARAMS)
    first = await api_call.send(post, PARAMS, Attempt())   # the SDK's path, then built once
    direct = await api_call.send(post, PARAMS, Attempt())  # the request built once
    assert post.direct
    sdk_wire, first_wire, direct_wire = (_host_named_alike(w) for w in emulator.seen)
    assert direct_wire == sdk_wire  # raw headers in order, names' case, values, and the body
    assert first_wire == sdk_wire
    assert json.loads(direct_wire[1]) == PARAMS
    assert (b"authorization", f"Bearer {KEY}".encode()) in direct_wire[0]
    assert direct.content[0].text == first.content[0].text == reference.content[0].text
    assert direct.usage.input_tokens == reference.usage.input_tokens
    assert direct.request_id and direct.request_id != first.request_id
    assert "anthropic-ratelimit-requests-remaining" in direct.headers  # what the limiter reads
    assert set(direct.headers) == set(first.headers)
    _no_key(post, direct)


@pytest.mark.parametrize(("scripted", "expected"), [
    (ScriptedError("rate_limit_error", headers={"retry-after": "7"}), RateLimited),
    (ScriptedError("overloaded_error", headers={"x-should-retry": "false"}), Overloaded),
    (ScriptedError("invalid_request_error", "max_tokens: too large"), RequestRejected)])
async def test_an_api_error_is_the_error_the_sdks_own_path_gives(
        emulator: Served, posts: Callable[..., MessagesPost], scripted: ScriptedError,
        expected: type[Exception]) -> None:
    post = await _warm(posts(emulator.url))

    def fail(_body: dict[str, Any]) -> Any:
        raise scripted

    _respond(emulator, fail)
    direct = await api_call.send(post, PARAMS, Attempt())
    through_sdk = Attempt(sent=True)
    with api_call.translated(through_sdk):  # the SDK's own request and error classes
        await post.client.messages.create(**PARAMS)
    for attempt in (direct, through_sdk):
        assert type(attempt.error) is expected and attempt.sent
    assert direct.error is not None and through_sdk.error is not None
    assert (direct.status, direct.error.error_type, direct.error.message) == \
        (through_sdk.status, through_sdk.error.error_type, through_sdk.error.message)
    assert direct.request_id and direct.error.request_id == direct.request_id
    assert set(direct.headers) == set(through_sdk.headers)
    assert getattr(direct.error, "retry_after", None) == getattr(through_sdk.error,
                                                                 "retry_after", None)
    _no_key(direct.error, direct)
    with pytest.raises(anthropic.APIStatusError) as raised:  # the SDK's own, before translation
        await post.post(b"{}")
    assert KEY.encode() not in pickle.dumps(raised.value)  # its request: method and URL only


async def test_a_refused_connection_is_not_sent_so_not_billed(
        emulator: Served, posts: Callable[..., MessagesPost]) -> None:
    post = await _warm(posts(emulator.url))
    await emulator.runner.cleanup()  # nothing listens on the port any more
    await asyncio.sleep(0.1)  # the client sees its pooled connection closed
    attempt = await api_call.send(post, PARAMS, Attempt())
    assert isinstance(attempt.error, ConnectionFailed)
    assert attempt.error.error_type == "connection_error"
    assert not attempt.sent
    attempt.unanswered(input_estimate=100, max_tokens=20)
    assert not attempt.possibly_billed
    _no_key(attempt.error, attempt)


async def test_a_reply_slower_than_the_clients_timeout_times_out_and_may_be_billed(
        emulator: Served, posts: Callable[..., MessagesPost]) -> None:
    post = await _warm(posts(emulator.url, 0.3))

    async def slow(_body: dict[str, Any]) -> str:
        await asyncio.sleep(3)
        return "late"

    _respond(emulator, slow)
    started = time.monotonic()
    attempt = await api_call.send(post, PARAMS, Attempt())
    assert time.monotonic() - started < 2.5  # the client's 0.3 s read timeout, not the reply
    assert isinstance(attempt.error, ConnectionFailed) and attempt.error.error_type == "timeout"
    assert attempt.sent
    attempt.unanswered(input_estimate=100, max_tokens=20)
    assert attempt.possibly_billed
    _no_key(attempt.error, attempt)


async def test_a_gzipped_reply_is_read_as_the_sdk_reads_it(
        posts: Callable[..., MessagesPost]) -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
               "content": [{"type": "text", "text": "squeezed"}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 2}}

    async def gzipped(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=gzip.compress(json.dumps(message).encode()),
                            headers={"Content-Type": "application/json",
                                     "Content-Encoding": "gzip", "request-id": "req_gz"})

    app = web.Application()
    app.router.add_post("/v1/messages", gzipped)
    served = await _serve(app)
    try:
        post = await _warm(posts(served.url))
        attempt = await api_call.send(post, PARAMS, Attempt())
        assert attempt.error is None
        assert attempt.content[0].text == "squeezed" and attempt.usage.output_tokens == 2
        assert (b"accept-encoding", b"gzip, deflate") in served.seen[-1][0]
    finally:
        await served.runner.cleanup()


def _replying(message: dict[str, Any], **headers: str) -> web.Application:
    """An app answering every ``POST /v1/messages`` with ``message``."""

    async def reply(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(message, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/messages", reply)
    return app


_MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "moved"}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 2}}


def _header(raw: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in raw if key.lower() == name]


async def test_a_base_url_that_redirects_keeps_the_sdks_path(
        posts: Callable[..., MessagesPost]) -> None:
    target = await _serve(_replying(_MESSAGE))

    async def moved(request: web.Request) -> web.Response:
        await request.read()
        raise web.HTTPTemporaryRedirect(f"{target.url}/v1/messages")  # 307: POST kept

    origin_app = web.Application()
    origin_app.router.add_post("/v1/messages", moved)
    origin = await _serve(origin_app)
    try:
        post = posts(origin.url)
        for _ in range(2):  # the SDK's path, where httpx follows the redirect, both times
            attempt = await api_call.send(post, PARAMS, Attempt())
            assert attempt.error is None and attempt.content[0].text == "moved"
        assert not post.direct
        for raw, body in target.seen:
            assert _header(raw, b"host") == [target.url.removeprefix("http://").encode()]
            assert json.loads(body) == PARAMS
    finally:
        await origin.runner.cleanup()
        await target.runner.cleanup()


async def test_a_cookie_the_server_deleted_is_not_sent_again(
        posts: Callable[..., MessagesPost]) -> None:
    replies = itertools.count(1)

    async def reply(request: web.Request) -> web.Response:
        await request.read()
        response = web.json_response(_MESSAGE)
        if next(replies) == 1:
            response.set_cookie("visit", "1")  # before the request is built once
        else:
            response.del_cookie("visit")
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", reply)
    served = await _serve(app)
    try:  # a host name: aiohttp's cookie jar keeps no cookies of an IP address
        post = await _warm(posts(served.url.replace("127.0.0.1", "localhost")))
        for _ in range(2):
            assert (await api_call.send(post, PARAMS, Attempt())).error is None
        assert _header(served.seen[-1][0], b"cookie") == []
    finally:
        await served.runner.cleanup()


async def test_redirects_follow_httpxs_rules_as_the_sdks_path_does(
        posts: Callable[..., MessagesPost]) -> None:
    """httpx, above the transport, follows redirects by its own rules (up to 20 of them; an
    ``Authorization`` kept on an upgrade to https); so a redirected call takes the SDK's path."""
    redirecting = False

    async def hop(request: web.Request) -> web.Response:
        await request.read()
        n = int(request.query.get("hop", "0"))
        if redirecting and n < 20:
            raise web.HTTPTemporaryRedirect(f"/v1/messages?hop={n + 1}")  # 307: POST kept
        return web.json_response(_MESSAGE)

    app = web.Application()
    app.router.add_post("/v1/messages", hop)
    served = await _serve(app)
    try:
        post = await _warm(posts(served.url))  # built once, before any redirect
        redirecting = True
        for _ in range(2):
            attempt = await api_call.send(post, PARAMS, Attempt())
            assert attempt.error is None and attempt.content[0].text == "moved"
        assert not post.direct
    finally:
        await served.runner.cleanup()


async def test_a_warmed_clients_first_call_goes_direct_with_the_sdks_wire(
        emulator: Served, posts: Callable[..., MessagesPost]) -> None:
    reference = posts(emulator.url)
    await reference.client.messages.create(**PARAMS)
    post = posts(emulator.url)
    await post.warm()  # an agent's start: no call made yet
    assert post.direct and not emulator.seen[1:]
    first = await api_call.send(post, PARAMS, Attempt())
    assert first.error is None and first.content
    sdk_wire, first_wire = (_host_named_alike(w) for w in emulator.seen)
    assert first_wire == sdk_wire  # the SDK's headers (platform ones too) and body
    _no_key(post)


_MOVED_INTERNAL = """
import asyncio, json, sys
import anthropic._base_client as base
saved = base.get_platform
del base.get_platform  # an SDK release that moved an internal the built request mirrors
from actors import api_call
from actors.messages_post import MIRRORS_SDK, MessagesPost, pooled_client
base.get_platform = saved  # the SDK itself is whole again

async def main() -> None:
    post = MessagesPost(pooled_client(sys.argv[1], sys.argv[2], 60.0))
    await post.warm()
    attempts = [await api_call.send(post, json.loads(sys.argv[3]), api_call.Attempt())
                for _ in range(2)]
    print(json.dumps({"mirrors": MIRRORS_SDK, "direct": post.direct,
                      "errors": [str(a.error) for a in attempts if a.error],
                      "texts": [a.content[0].text for a in attempts]}))
    await post.client.close()

asyncio.run(main())
"""


async def test_an_sdk_without_the_mirrored_internals_keeps_its_own_path(
        emulator: Served) -> None:
    """A newer SDK inside our pin's range may move a private module: agents must still work."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _MOVED_INTERNAL, KEY, emulator.url, json.dumps(PARAMS),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-2_000:]
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["mirrors"] is False and seen["direct"] is False, seen
    assert not seen["errors"] and all(seen["texts"]), seen
    assert len(emulator.seen) == 2  # both calls reached the API, through the SDK

