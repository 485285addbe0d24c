"""Message Batches: create, poll, list, cancel, delete, and JSONL results.

The wire shapes are in ``docs/messages-api.md`` §6.

A batch is processed by one background task per batch, tracked so the app's cleanup cancels
it: after ``batch_delay_s`` it runs every request through the core's ``state.complete(...,
batch=True)`` (which bills at the table's batch discount), a few at a time. Cancelling stops
requests that have not started; whatever is unprocessed when ``batch_expire_s`` runs out
expires. As in the API, ``request_counts`` stay all ``processing`` until the whole batch ends,
and the results URL is an absolute URL on the emulator's own host, because the SDK fetches it
as given.

The batch API's own limits (``EmulatorConfig.batch_limits``: endpoint RPM, processing queue)
are checked on every route (:mod:`emulator.batch_limits`); batch requests do not take the
Messages limits.

Wiring (the app factory): ``setup(app)`` adds :data:`routes` and the store's cleanup context.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emulator.batch_limits import BatchLimitBook, BatchLimits
from emulator.state import STATE
from emulator.validation import ApiError, check_version
from emulator.wire_errors import error_body, new_request_id

MAX_REQUESTS = 100_000
"""The API's cap on requests per batch."""
WORKERS = 8
"""Requests of one batch in flight at once: enough to finish a test batch quickly, few
enough that a big batch does not starve interactive calls on the same loop."""
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

routes = web.RouteTableDef()

Status = Literal["in_progress", "canceling", "ended"]
Outcome = Literal["succeeded", "errored", "canceled", "expired"]


class Core(Protocol):
    """What batches need of the emulator core's state (``request.app[STATE]``)."""

    async def complete(self, api_key: str, params: dict[str, Any], *,
                       batch: bool = False) -> tuple[int, dict[str, Any]]:
        """Run one non-streaming request; return (HTTP status, response or error body)."""
        ...


class BatchRequest(BaseModel):
    """One entry of a create body."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    """The caller's id for matching results (results come back in any order)."""
    params: dict[str, Any]
    """Non-streaming ``messages.create`` parameters, validated when the request runs."""


class BatchCreate(BaseModel):
    """The body of ``POST /v1/messages/batches``."""

    model_config = ConfigDict(extra="forbid")

    requests: list[BatchRequest] = Field(min_length=1, max_length=MAX_REQUESTS)
    """The requests, each with a ``custom_id`` unique within the batch."""


class RequestCounts(BaseModel):
    """Tallies by outcome; all ``processing`` until the batch ends, always summing to its size."""

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0


class Batch(BaseModel):
    """One batch: what the API reports about it, plus who owns it and its results."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    """``msgbatch_...``."""
    owner: str
    """The fingerprint of the key that created it; batches are visible to that key only."""
    created_at: datetime
    expires_at: datetime
    """When unprocessed requests expire (``batch_expire_s`` after creation; 24 h in the API)."""
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    archived_at: datetime | None = None
    """Never set: the emulator keeps results for as long as it runs."""
    processing_status: Status = "in_progress"
    request_counts: RequestCounts
    requests: list[BatchRequest]
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """custom_id -> result object, in completion order."""
    cancel_requested: asyncio.Event = Field(default_factory=asyncio.Event)

    def wire(self, origin: str) -> dict[str, Any]:
        """The ``MessageBatch`` JSON; ``origin`` is this emulator's ``scheme://host:port``."""
        ended = self.processing_status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.request_counts.model_dump(),
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.expires_at),
            "ended_at": _rfc3339(self.ended_at),
            "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
            "archived_at": _rfc3339(self.archived_at),
            "results_url": f"{origin}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class BatchStore:
    """Every batch of this emulator and its processing tasks; counters for the stats route."""

    def __init__(self, limits: BatchLimits | None = None) -> None:
        self.limits = BatchLimitBook(limits or BatchLimits())
        self.batches: dict[str, Batch] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.counters: dict[str, int] = {}
        self.reset_counters()

    def reset_counters(self) -> None:
        """Zero the counters and refill the limits (the emulator's reset); batches are kept."""
        self.limits.reset()
        self.counters = dict.fromkeys(
            ("created", "requests", "succeeded", "errored", "canceled", "expired", "deleted"), 0)

    def stats(self) -> dict[str, int]:
        """Counters for ``/stats``: batches created and deleted, requests by outcome, 429s."""
        return {**self.counters, "rate_limited": self.limits.refused}

    def queued(self, owner: str) -> int:
        """Requests of ``owner``'s batches still in the processing queue."""
        return sum(len(b.requests) for b in self.batches.values()
                   if b.owner == owner and b.processing_status != "ended")

    def start(self, batch: Batch, state: Core, api_key: str, delay_s: float) -> None:
        """Register ``batch`` and process it in a tracked background task as ``api_key``."""
        self.batches[batch.id] = batch
        self.counters["created"] += 1
        self.counters["requests"] += len(batch.requests)
        task = asyncio.get_running_loop().create_task(self._process(batch, state, api_key, delay_s),
                                                      name=f"batch {batch.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Cancel every processing task and wait for them (the app's cleanup)."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _process(self, batch: Batch, state: Core, api_key: str, delay_s: float) -> None:
        """Wait, run the requests until done, cancelled or expired, then end the batch."""
        left = (batch.expires_at - datetime.now(UTC)).total_seconds()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, left)):
                with contextlib.suppress(TimeoutError):  # the delay, cut short by a cancel
                    await asyncio.wait_for(batch.cancel_requested.wait(), delay_s)
                pending = iter(batch.requests)
                async with asyncio.TaskGroup() as group:
                    for _ in range(min(WORKERS, len(batch.requests))):
                        group.create_task(self._work(batch, pending, state, api_key))
        self._end(batch)

    async def _work(self, batch: Batch, pending: Iterator[BatchRequest], state: Core,
                    api_key: str) -> None:
        """Take requests one at a time until none are left or the batch is cancelled."""
        for request in pending:
            if batch.cancel_requested.is_set():
                return
            batch.results[request.custom_id] = await _run_one(state, api_key, request)

    def _end(self, batch: Batch) -> None:
        """Mark the unprocessed requests canceled or expired and publish the final counts."""
        leftover: Outcome = "canceled" if batch.cancel_requested.is_set() else "expired"
        for request in batch.requests:
            batch.results.setdefault(request.custom_id, {"type": leftover})
        counts = RequestCounts()
        for result in batch.results.values():
            kind: Outcome = result["type"]
            setattr(counts, kind, getattr(counts, kind) + 1)
            self.counters[kind] += 1
        batch.request_counts = counts
        batch.ended_at = datetime.now(UTC)
        batch.processing_status = "ended"


async def _run_one(state: Core, api_key: str, request: BatchRequest) -> dict[str, Any]:
    """One request through the core: a ``succeeded`` message or an ``errored`` error body."""
    try:
        status, body = await state.complete(api_key, request.params, batch=True)
    except Exception as exc:  # a bug in the core must not wedge the batch; report it per request
        return {"type": "errored",
                "error": error_body("api_error", f"internal error: {exc}", new_request_id())}
    if status == 200:
        return {"type": "succeeded", "message": body}
    return {"type": "errored", "error": body}


# --- routes ------------------------------------------------------------------------------


BATCHES: web.AppKey[BatchStore] = web.AppKey("batches", BatchStore)


async def batches_ctx(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the store lives with the app and its tasks die with it."""
    store = app[BATCHES] = BatchStore(app[STATE].config.batch_limits)
    app[STATE].on_reset.append(store.reset_counters)
    yield
    await store.close()


def setup(app: web.Application) -> None:
    """Add the batch routes and the store to ``app`` (before it starts)."""
    app.add_routes(routes)
    app.cleanup_ctx.append(batches_ctx)


@routes.post("/v1/messages/batches")
async def create_batch(request: web.Request) -> web.Response:
    """``messages.batches.create``: validate, register, start processing in the background."""
    key, owner = _caller(request)
    try:
        body = BatchCreate.model_validate_json(await request.read())
    except ValidationError as exc:
        _refuse("invalid_request_error", _describe(exc))
    seen: set[str] = set()
    for i, item in enumerate(body.requests):
        if item.custom_id in seen:
            _refuse("invalid_request_error", f"requests.{i}.custom_id: duplicate custom_id "
                    f"{item.custom_id!r}; each request in a batch needs a unique custom_id")
        seen.add(item.custom_id)
        if item.params.get("stream"):
            _refuse("invalid_request_error",
                    f"requests.{i}.params.stream: batch requests cannot be streamed")
    store = request.app[BATCHES]
    refused = store.limits.check_queue(queued=store.queued(owner), adding=len(body.requests))
    if refused is not None:
        raise refused
    state = request.app[STATE]
    now = datetime.now(UTC)
    batch = Batch(id=_new_id(), owner=owner, created_at=now,
                  expires_at=now + timedelta(seconds=state.config.batch_expire_s),
                  request_counts=RequestCounts(processing=len(body.requests)),
                  requests=body.requests)
    request.app[BATCHES].start(batch, state, key, state.config.batch_delay_s)
    return _json(batch.wire(_origin(request)))


@routes.get("/v1/messages/batches")
async def list_batches(request: web.Request) -> web.Response:
    """``messages.batches.list``: newest first, cursor pages by ``after_id``/``before_id``."""
    _, owner = _caller(request)
    query = request.query
    limit = int(query["limit"]) if query.get("limit", "").isdigit() else 20
    if "limit" in query and not (query["limit"].isdigit() and 1 <= limit <= 1000):
        _refuse("invalid_request_error", "limit: Input should be an integer from 1 to 1000")
    mine = [b for b in reversed(request.app[BATCHES].batches.values()) if b.owner == owner]
    ids = [b.id for b in mine]
    if "after_id" in query:
        start = _index(ids, query["after_id"]) + 1
        page, has_more = mine[start:start + limit], len(mine) > start + limit
    elif "before_id" in query:
        end = _index(ids, query["before_id"])
        page, has_more = mine[max(0, end - limit):end], end - limit > 0
    else:
        page, has_more = mine[:limit], len(mine) > limit
    origin = _origin(request)
    return _json({"data": [b.wire(origin) for b in page], "has_more": has_more,
                  "first_id": page[0].id if page else None,
                  "last_id": page[-1].id if page else None})


@routes.get("/v1/messages/batches/{batch_id}")
async def retrieve_batch(request: web.Request) -> web.Response:
    """``messages.batches.retrieve``: the batch as it stands (poll this until ``ended``)."""
    return _json(_owned(request).wire(_origin(request)))


@routes.post("/v1/messages/batches/{batch_id}/cancel")
async def cancel_batch(request: web.Request) -> web.Response:
    """``messages.batches.cancel``: requests not yet started end as ``canceled``."""
    batch = _owned(request)
    if batch.processing_status == "ended":
        _refuse("invalid_request_error",
                f"message batch {batch.id} has already ended and cannot be canceled")
    if not batch.cancel_requested.is_set():
        batch.cancel_requested.set()
        batch.cancel_initiated_at = datetime.now(UTC)
        batch.processing_status = "canceling"
    return _json(batch.wire(_origin(request)))


@routes.delete("/v1/messages/batches/{batch_id}")
async def delete_batch(request: web.Request) -> web.Response:
    """``messages.batches.delete``: only once ended (cancel an in-progress batch first)."""
    batch = _owned(request)
    if batch.processing_status != "ended":
        _refuse("invalid_request_error",
                f"message batch {batch.id} cannot be deleted while it is "
                f"{batch.processing_status.replace('_', ' ')}; cancel it and wait for it to end")
    store = request.app[BATCHES]
    del store.batches[batch.id]
    store.counters["deleted"] += 1
    return _json({"id": batch.id, "type": "message_batch_deleted"})


@routes.get("/v1/messages/batches/{batch_id}/results")
async def batch_results(request: web.Request) -> web.Response:
    """``messages.batches.results``: one JSON line per request, in completion order."""
    batch = _owned(request)
    if batch.processing_status != "ended":
        _refuse("invalid_request_error", f"message batch {batch.id} is still "
                f"{batch.processing_status}; results are available once processing has ended")
    lines = (json.dumps({"custom_id": cid, "result": result}) + "\n"
             for cid, result in batch.results.items())
    return web.Response(body="".join(lines).encode(), content_type="application/binary",
                        headers={"request-id": new_request_id()})


# --- helpers of the handlers ---------------------------------------------------------------


def _refuse(error_type: str, message: str) -> NoReturn:
    """End the handler with the API's error (the app's middleware renders it)."""
    raise ApiError(error_type, message)


def _caller(request: web.Request) -> tuple[str, str]:
    """The caller's raw key and its fingerprint, after the checks every API route makes.

    The raw key only travels into a batch's processing task (``state.complete`` needs it);
    batches are owned by, and listed for, the fingerprint.
    """
    state = request.app[STATE]
    key = state.authenticate(request)
    check_version(request.headers.get("anthropic-version"))
    owner = state.fingerprint(key)
    refused = request.app[BATCHES].limits.check_call(owner)
    if refused is not None:
        raise refused
    return key, owner


def _owned(request: web.Request) -> Batch:
    """The batch named in the path if it exists and belongs to the caller, else a 404."""
    _, owner = _caller(request)
    batch_id = request.match_info["batch_id"]
    batch = request.app[BATCHES].batches.get(batch_id)
    if batch is None or batch.owner != owner:
        _refuse("not_found_error", f"message batch {batch_id!r} not found")
    return batch


def _index(ids: list[str], cursor: str) -> int:
    if cursor not in ids:
        _refuse("invalid_request_error", f"no message batch {cursor!r} to page from")
    return ids.index(cursor)


def _describe(exc: ValidationError) -> str:
    """The first validation problem as ``path: message``, like the API's 400s."""
    first = exc.errors()[0]
    path = ".".join(str(part) for part in first["loc"])
    return f"{path}: {first['msg']}" if path else first["msg"]


def _json(payload: dict[str, Any]) -> web.Response:
    return web.json_response(payload, headers={"request-id": new_request_id()})


def _origin(request: web.Request) -> str:
    """``scheme://host:port`` as the client reached us: the results URL must point back here."""
    return f"{request.scheme}://{request.host}"


def _new_id() -> str:
    return "msgbatch_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _rfc3339(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
