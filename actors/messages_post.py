"""``POST /v1/messages`` as the SDK sends it, built once per client, sent through its own pool.

Why: for every call the SDK builds its request anew (request options, five layers of headers,
URL merging, an httpx ``Request``, then its transport maps that onto aiohttp and the reply back
onto an httpx ``Response``): a fifth of an Agent host's CPU per call (``docs/performance.md``).
Yet everything in a non-streaming request but its body is the same on every call of one
client: the URL, the headers (the key, the API version, the ``x-stainless-*`` ones; the retry
count is always 0, because the SDK's own retries are off and every attempt of ours is a new
call) and the timeouts. So the SDK builds that request once, with its own code
(``_build_request``), and each call hands the body to the very ``aiohttp`` session the client's
transport owns (one client, one pool), with the timeouts it would apply.
``tests/actors/test_messages_post.py`` holds the wire to ``messages.create``'s, header for
header and byte for byte (but ``Host``, spelt ``Host`` by aiohttp, ``host`` by httpx).

What stays the SDK's: a non-2xx answer raises the SDK's own exception
(``_make_status_error_from_response``, from an httpx ``Response`` built on that rare path
only), and a failed transport raises ``APITimeoutError`` or ``APIConnectionError`` chained to
aiohttp's error through the transport's own mapping, as ``_attempt_request`` raises them: so
``actors/api_call.py`` translates both exactly as before. A client this cannot mirror exactly
(a proxy, middleware, token credentials, request hooks, a base URL that redirects: httpx
follows redirects by rules of its own) keeps the SDK's path for every call, and every
client's first call takes it too (the SDK resolves the platform headers there), unless
:meth:`MessagesPost.warm` did that first; the request's headers, with the key, live only in
this object, whose repr shows none of them (``docs/reliability.md`` §4). An SDK whose internals
this needs have moved (``MIRRORS_SDK`` false) keeps its own path too: slower, never wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import anthropic
import httpx2
import yarl
from multidict import CIMultiDict

try:  # the SDK internals the built request mirrors (anthropic 2.x's)
    from anthropic._base_client import AsyncAPIClient, get_platform
    from anthropic._models import FinalRequestOptions
    from anthropic._vendor.httpx_aiohttp.transport import (
        AiohttpTransport,
        map_aiohttp_exceptions,
    )
except ImportError:  # an SDK that moved one: every call keeps the SDK's own path
    MIRRORS_SDK = False
else:
    MIRRORS_SDK = True

_log = logging.getLogger(__name__)
_PATH = "/v1/messages"
_PER_CALL = ("content-length", "transfer-encoding", "host", "cookie")
"""Not frozen: the body's length is set per call; aiohttp writes ``Host`` from the URL it
sends to; and cookies come from the session's own jar, which sees every reply (a frozen one
would resend what the server has since changed or deleted)."""
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
"""With a ``Location``, the answers httpx follows (``Response.has_redirect_location``)."""
_DECODED = (b"content-encoding", b"content-length", b"transfer-encoding")
"""Not carried to an error's httpx ``Response``: aiohttp has already decoded the body."""


def pooled_client(api_key: str, base_url: str | None, timeout_s: float) -> anthropic.AsyncAnthropic:
    """The agent's one client: retries off (the agent's loop owns them), aiohttp transport.

    The SDK's aiohttp transport: httpcore's pool scans every connection for expiry on each
    request, which made the default transport ~40 % slower at 32 calls in flight (1.7x fewer
    calls/s against the emulator, measured; ``benchmarks/overhead.py``).
    """
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s,
        http_client=anthropic.DefaultAioHttpClient(timeout=timeout_s))


class _Wire:
    """The request every call of one client repeats: where, with which headers and timeouts."""

    __slots__ = ("follow", "headers", "sni", "timeout", "transport", "url")

    def __init__(self, request: httpx2.Request, transport: AiohttpTransport,
                 http: httpx2.AsyncClient) -> None:
        self.transport = transport
        self.url = yarl.URL(str(request.url))  # as the transport passes it: str, parsed by aiohttp
        self.headers: CIMultiDict[str] = CIMultiDict(
            (name, value) for name, value in request.headers.multi_items()
            if name.lower() not in _PER_CALL)
        timeout = request.extensions.get("timeout", {})
        self.timeout = aiohttp.ClientTimeout(  # the transport's own mapping of httpx's timeouts
            sock_connect=timeout.get("connect"), sock_read=timeout.get("read"),
            connect=timeout.get("pool"))
        self.sni: str | None = request.extensions.get("sni_hostname")
        self.follow = http.follow_redirects  # httpx follows them above the transport

    def __repr__(self) -> str:
        return f"_Wire(POST {self.url})"  # never the headers: they hold the key


class MessagesPost:
    """``POST /v1/messages`` through ``client``: the SDK's request, built once.

    Args:
        client: The agent's ``AsyncAnthropic`` (:func:`pooled_client`).
    """

    def __init__(self, client: anthropic.AsyncAnthropic) -> None:
        self.client = client
        self._wire: _Wire | None = None
        self._tried = False

    def __repr__(self) -> str:
        return f"MessagesPost({self.client.base_url!s}, direct={self.direct})"

    @property
    def direct(self) -> bool:
        """Whether calls skip the SDK's request building (after the client's first call)."""
        return self._wire is not None

    async def warm(self) -> None:
        """Do now what the client's first call would: then that call goes direct too.

        The SDK's first request resolves its platform headers (in a thread) and opens its
        transport's aiohttp session; only then is the request built once. Done at the agent's
        start instead, a host's first wave of calls (~25 at once) skips the SDK's request
        building as every later call does (``docs/performance.md``, "The map phase's wall
        time"). What this cannot mirror keeps the SDK's path, as on a first call.
        """
        if self._tried or not MIRRORS_SDK:
            return
        client = self.client
        if client._platform is None:  # as ``request()`` does: it may block, so in a thread
            client._platform = await asyncio.to_thread(get_platform)
        wire = self._built(opening=True)
        if wire is not None:
            self._wire, self._tried = wire, True

    async def post(self, body: bytes) -> tuple[Mapping[str, str], bytes]:
        """Send ``body``; the reply's headers and bytes for a 2xx, else the SDK's exception."""
        wire = self._wire
        if wire is None:
            return await self._through_sdk(body)
        try:
            with map_aiohttp_exceptions():  # aiohttp's errors as the SDK's transport maps them
                session = wire.transport.client
                if not isinstance(session, aiohttp.ClientSession):
                    raise RuntimeError("the client's transport has no session")
                headers = wire.headers.copy()
                headers["content-length"] = str(len(body))  # as httpx writes it, not aiohttp
                response = await session.request(
                    "POST", wire.url, data=body, headers=headers, timeout=wire.timeout,
                    allow_redirects=False, server_hostname=wire.sni)
                try:
                    content = await response.read()
                finally:
                    response.release()
        except httpx2.TimeoutException as exc:  # as ``_attempt_request`` raises them
            raise anthropic.APITimeoutError(request=_bare(wire)) from exc
        except Exception as exc:
            raise anthropic.APIConnectionError(request=_bare(wire)) from exc
        if response.status in _REDIRECTS and wire.follow and "location" in response.headers:
            # httpx's rules, not aiohttp's (its limit of 20, an Authorization kept on an
            # upgrade to https): the SDK's path from now on. The redirect ran nothing, so
            # sending the body again cannot bill it twice.
            self._wire = None
            return await self._through_sdk(body)
        if not 200 <= response.status < 300:
            raise self._status_error(wire, response, content)
        return response.headers, content

    async def _through_sdk(self, body: bytes) -> tuple[Mapping[str, str], bytes]:
        """The SDK's own path (``client.post``); once it has answered, build the wire,
        unless that answer came through a redirect (httpx's to follow, every time)."""
        response = await self.client.post(_PATH, cast_to=httpx2.Response, content=body)
        if not self._tried:  # after the SDK's first call: its platform headers are resolved
            self._tried = True
            self._wire = None if response.history else self._built()
        return response.headers, response.content

    def _built(self, opening: bool = False) -> _Wire | None:
        """The SDK's request for this client, or None if the transport is not one to mirror.

        ``opening``: open the transport's session first, as its first request would.
        """
        client = self.client
        if not MIRRORS_SDK or not _mirrorable(client):
            return None
        try:
            request = client._build_request(
                FinalRequestOptions.construct(method="post", url=_PATH, content=b"{}"))
            http = client._client
            transport = http._transport_for_url(request.url)
            if not isinstance(transport, AiohttpTransport) or transport.proxy is not None \
                    or transport.uds:
                return None
            if opening and not isinstance(transport.client, aiohttp.ClientSession):
                transport.client = transport.get_client()  # as ``handle_async_request`` does
            if not isinstance(transport.client, aiohttp.ClientSession):
                return None
            return _Wire(request, transport, http)
        except Exception as exc:  # another SDK's internals: keep its own path
            _log.debug("messages post: the SDK's path for %s (%s)", client.base_url,
                       type(exc).__name__)
            return None

    def _status_error(self, wire: _Wire, response: aiohttp.ClientResponse,
                      content: bytes) -> anthropic.APIStatusError:
        """The SDK's exception for a non-2xx answer, built as the SDK builds it."""
        headers = [(k, v) for k, v in response.raw_headers if k.lower() not in _DECODED]
        reply = httpx2.Response(response.status, headers=headers, content=content,
                                request=_bare(wire))
        return self.client._make_status_error_from_response(reply)


def _bare(wire: _Wire) -> httpx2.Request:
    """The request an exception carries: method and URL only, so never the key."""
    return httpx2.Request("POST", str(wire.url))


def _mirrorable(client: Any) -> bool:
    """Whether the SDK would send every non-streaming request of ``client`` alike.

    Not with request hooks of a subclass, middleware, credentials that refresh a token, an
    idempotency header (a key per request), or httpx event hooks and auth. (OpenTelemetry: the
    SDK starts a span only for its own methods' calls, never for ``client.post``, which
    non-streaming calls used before; so neither path has one, and streams keep theirs.)
    """
    try:
        http = client._client
        return (type(client)._prepare_options is AsyncAPIClient._prepare_options
                and type(client)._prepare_request is AsyncAPIClient._prepare_request
                and not client._middleware
                and client.custom_auth is None and client._idempotency_header is None
                and not any(http.event_hooks.values()) and http.auth is None)
    except AttributeError:  # another SDK's internals: keep its own path
        return False
