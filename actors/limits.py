"""What a rate limit is, which bucket a call draws from, and what the lease and limiter say.

The API meters each organisation per *model class* (our tier) with continuously refilled
buckets for requests, input tokens and output tokens per minute (``docs/messages-api.md`` §4.1),
plus a cap on requests in flight that we enforce ourselves. :class:`TierLimits` holds those
four numbers; :class:`BucketKey` names one set of buckets: one account (a fingerprint of the
API key, never the key) and one tier.

The other models are the wire protocol between a process's
:class:`~actors.limiter_lease.LimiterLease` and the cluster's
:class:`~actors.ratelimiter.RateLimiter`. Everything a limiter hands out lands in the lease's
local *stock* first; the lease reports what its calls used from that stock, so the limiter
always knows how much of each bucket sits unused in some process.

Example:
    >>> key = BucketKey.for_api_key("sk-ant-example", "sonnet")
    >>> key.tier, len(key.account)
    ('sonnet', 12)
    >>> TierLimits(rpm=50, itpm=30_000, otpm=8_000, max_concurrency=8).refill_per_s
    (0.8333333333333334, 500.0, 133.33333333333334)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pydantic import Field

from actors.frozen import Frozen as _Frozen
from actors.tiers import Tier


class TierLimits(_Frozen):
    """The per-minute limits of one tier for one account, and its concurrency cap.

    Each per-minute limit is also the bucket's capacity, so a burst of up to a whole minute's
    allowance goes through at once, as with the API's token buckets.
    """

    rpm: int = Field(gt=0)
    """Requests per minute."""
    itpm: int = Field(gt=0)
    """Input tokens per minute: uncached input plus cache writes (cache reads are free)."""
    otpm: int = Field(gt=0)
    """Output tokens per minute (``max_tokens`` reserved up front, the rest refunded)."""
    max_concurrency: int = Field(gt=0)
    """Requests in flight at once, cluster-wide."""

    @property
    def capacity(self) -> tuple[int, int, int]:
        """Bucket sizes: (requests, input tokens, output tokens)."""
        return (self.rpm, self.itpm, self.otpm)

    @property
    def refill_per_s(self) -> tuple[float, float, float]:
        """Refill rates per second: (requests, input tokens, output tokens)."""
        return (self.rpm / 60, self.itpm / 60, self.otpm / 60)


class BucketKey(_Frozen):
    """One account's buckets for one tier: every call to that tier with that key draws here."""

    account: str = Field(pattern=r"^[0-9a-f]{6,64}$")
    """A hex fingerprint of the API key (a sha256 prefix): safe to log, never the key."""
    tier: Tier
    """The model class whose limits the call shares."""

    @classmethod
    def for_api_key(cls, api_key: str, tier: Tier) -> BucketKey:
        """Build the key for ``api_key``, keeping only a 12-hex-digit sha256 fingerprint."""
        return cls(account=hashlib.sha256(api_key.encode()).hexdigest()[:12], tier=tier)

    def __str__(self) -> str:
        return f"{self.account}/{self.tier}"


class Amount(_Frozen):
    """Quantities of the three buckets: request permits, input tokens, output tokens."""

    requests: float = 0
    input_tokens: float = 0
    output_tokens: float = 0

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.requests, self.input_tokens, self.output_tokens)

    @classmethod
    def of(cls, values: tuple[float, float, float] | list[float]) -> Amount:
        return cls(requests=values[0], input_tokens=values[1], output_tokens=values[2])

    def __bool__(self) -> bool:
        return any(self.as_tuple())


class Need(_Frozen):
    """What one queued call still lacks: what its lease's stock does not cover already."""

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    request: bool = True
    """False when the lease's stock already holds a request permit for this call."""
    slot: bool = True
    """False when the lease already holds a spare concurrency slot for this call."""


class Holding(_Frozen):
    """Concurrency slots a lease holds for one key (in flight plus spare)."""

    key: BucketKey
    slots: int = Field(ge=0)


class GrantRequest(_Frozen):
    """A lease asks for the needs of its queued calls (a prefix may be granted) and headroom."""

    lease_id: str
    session: str
    """The registration the lease holds (from its last settle reply)."""
    seq: int
    """Unique per lease: a retried request with the same ``seq`` gets the same grant."""
    key: BucketKey
    needs: list[Need] = Field(default_factory=list)
    """In arrival order; the limiter grants the longest prefix that fits (at least one)."""
    extra: Amount = Amount()
    """Spare stock wanted for calls to come; granted only from idle capacity, never waited for."""


class KeyView(_Frozen):
    """What a lease should know about one key after talking to the limiter."""

    key: BucketKey
    limits: TierLimits
    waiting_others: int = 0
    """Parked grant requests of *other* leases: when above 0, give stock back."""
    paused_for_s: float = 0.0
    """Seconds left of a 429 pause; no call may start before then."""
    probing: bool = False
    """After a pause (429 or circuit breaker), one call at a time goes out until one is
    answered, then a breaker ramps up: hold no stock and no spare slot."""
    idle_share: float = 0.0
    """The smallest share of the key's buckets (and of its concurrency slots) that the limiter
    could still grant (0-1). Far from empty, nobody can be waiting for a lease's refunds or
    spare slots soon: it may report less often."""


class Grant(_Frozen):
    """The answer to a :class:`GrantRequest`."""

    session: str | None
    """None: the limiter does not know this lease (new, expired or the limiter restarted)."""
    granted: int = 0
    """How many needs, from the first, were granted into the lease's stock."""
    extra: Amount = Amount()
    rejected: str | None = None
    """Why the first need can never be granted (larger than a bucket's capacity)."""
    view: KeyView | None = None


class HeaderReading(_Frozen):
    """The ``anthropic-ratelimit-*-remaining`` values of one response, and how old they are."""

    requests: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    age_s: float = Field(default=0.0, ge=0)
    """Seconds between the response and the report: the bucket has refilled since."""

    @classmethod
    def parse(cls, headers: Mapping[str, str] | None,
              age_s: float = 0.0) -> HeaderReading | None:
        """Read the remaining values from response headers (any case); None if there are none.

        Every settle of every call passes here: lowercased keys (what agents keep) are read
        directly, and only a mapping with other keys is lowercased first.
        """
        if not headers:
            return None
        raw = [headers.get(name) for _, name in _REMAINING]
        if None in raw and any(not k.islower() for k in headers):
            lower = {k.lower(): v for k, v in headers.items()}
            raw = [lower.get(name) for _, name in _REMAINING]
        values = {field: _int(value) for (field, _), value in zip(_REMAINING, raw, strict=True)}
        if all(v is None for v in values.values()):
            return None
        return cls(**values, age_s=age_s)


class KeyReport(_Frozen):
    """What happened to one key's stock and slots in a lease since its last report."""

    key: BucketKey
    used: Amount = Amount()
    """Taken from stock by calls, net of refunds the lease kept in stock (may be negative)."""
    returned: Amount = Amount()
    """Stock handed back to the buckets (idle, or others are waiting)."""
    charged: Amount = Amount()
    """Usage beyond what the calls had reserved: taken from the buckets, which may go negative."""
    in_flight: Amount = Amount()
    """The reservations of this lease's calls sent and not answered yet, as of the report (a
    level, not a change). The server has taken what these calls really use, so its
    ``remaining`` header leaves them out: the limiter leaves them out too when it compares."""
    released_slots: int = Field(default=0, ge=0)
    headers: HeaderReading | None = None
    retry_after_s: float | None = None
    """Set when a call got a 429: the bucket pauses cluster-wide for this long."""
    answered: int = Field(default=0, ge=0)
    """Calls the server answered (not a 429, not overloaded): after a pause, the probe got
    through."""
    overloaded: int = Field(default=0, ge=0)
    """Calls answered 529/5xx (overloaded): enough in a row open the key's circuit breaker."""
    overloaded_trailing: int | None = Field(default=None, ge=0)
    """Overloaded answers that continue the key's streak: calls *sent* after the last call
    the lease saw answered (a 529 comes back at once, a reply only after the model ran, so
    the answer of a call sent before an outage lands after the outage's first 529s). None:
    all of ``overloaded`` when the report holds no answer, else none."""
    answers_break_streak: bool = True
    """Whether the report's answers end the streak: False when every one of them was sent
    before all the overloaded calls the lease's streak counts (old news, not a recovery)."""
    answered_age_s: float | None = Field(default=None, ge=0)
    """How long before the report the latest-sent of its answered calls was sent: across
    leases the limiter orders answers and overloaded calls by this (None: unknown)."""
    overloaded_age_s: float | None = Field(default=None, ge=0)
    """How long before the report the earliest-sent of its trailing overloaded calls was
    sent (None: unknown, or none)."""
    overload_retry_after_s: float | None = None
    """The longest ``retry-after`` those overloaded answers asked for, if any."""


class TopUp(_Frozen):
    """Stock a lease asks for, for one key, in a settle batch: granted from idle capacity only,
    never waited for (the headroom a :class:`GrantRequest` carries in ``extra``)."""

    key: BucketKey
    amount: Amount


class SettleBatch(_Frozen):
    """A lease's batched report; it also renews the lease, or registers it when unknown."""

    lease_id: str
    session: str | None
    seq: int
    """Increasing per lease; a batch whose ``seq`` was already applied is ignored."""
    holdings: list[Holding] = Field(default_factory=list)
    """Every slot the lease holds, so a new registration starts from the truth."""
    reports: list[KeyReport] = Field(default_factory=list)
    job: str | None = None
    """The lease's job (its process's Ray job id): waiters of different jobs take turns.
    None: the lease is a job of its own."""
    closing: bool = False
    """The lease is closing: forget it (after applying the reports)."""
    topups: list[TopUp] = Field(default_factory=list)
    """Stock wanted for calls to come, after the reports are applied: a busy process's
    top-ups ride on the settles it sends anyway instead of costing a grant request each."""


class SettleReply(_Frozen):
    """The limiter's answer to a :class:`SettleBatch`."""

    session: str
    lease_ttl_s: float
    views: list[KeyView] = Field(default_factory=list)
    name: str | None = None
    """The limiter actor's name and namespace, so a lease can find it again if it dies."""
    namespace: str | None = None
    extras: list[TopUp] = Field(default_factory=list)
    """What was granted of the batch's ``topups`` (already in the lease's stock)."""


_REMAINING = tuple((field, f"anthropic-ratelimit-{name}-remaining") for field, name in (
    ("requests", "requests"), ("input_tokens", "input-tokens"), ("output_tokens", "output-tokens")))


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
