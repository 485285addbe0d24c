"""Data that crosses actor boundaries: usage, ledger records, agent requests and replies.

Everything here is a frozen pydantic v2 model with a literal ``kind``; costs are ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from actors.frozen import Frozen as _Frozen
from actors.tiers import Tier

CallStatus = Literal["ok", "error", "cancelled", "cache_hit", "escalated", "possibly_billed"]
"""How one attempt ended: answered, failed, abandoned by us, served without an API call,
answered (and billed) with a reply that failed its validation, so the call went one tier up, or
sent with no answer (connection lost, timed out): the API may have run and billed it, so it is
recorded at its reservation (input estimate + ``max_tokens``), an upper bound of that bill."""

MAX_SPECULATIVE = 8
"""Most concurrent attempts of one speculative call (each one is billed until cancelled)."""

CallSource = Literal["api", "cache", "batch"]
"""Where the answer came from: a live Messages call, the response cache, or a Message Batch."""


class Usage(_Frozen):
    """Tokens of one call, as the API bills them (cache reads and writes kept apart)."""

    kind: Literal["usage"] = "usage"
    input_tokens: int = 0
    """Uncached input tokens (after the last cache breakpoint)."""
    output_tokens: int = 0
    """Output tokens."""
    cache_write_5m: int = 0
    """Input tokens written to the 5-minute cache."""
    cache_write_1h: int = 0
    """Input tokens written to the 1-hour cache."""
    cache_read: int = 0
    """Input tokens read from the cache."""

    @property
    def limited_input_tokens(self) -> int:
        """What counts toward input tokens/min: uncached input plus cache writes, not reads."""
        return self.input_tokens + self.cache_write_5m + self.cache_write_1h

    @property
    def total_input_tokens(self) -> int:
        """Every input token: uncached, written and read."""
        return self.limited_input_tokens + self.cache_read

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f: getattr(self, f) + getattr(other, f) for f in _TOKEN_FIELDS})

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """Map the SDK's ``Usage`` / ``MessageDeltaUsage`` (or its dict) to ours.

        The 5m/1h split comes from ``cache_creation``; when the API omits it, every cache
        write is taken as 5-minute, which is the API's default TTL.
        """
        data = usage if isinstance(usage, dict) else usage.model_dump()
        written = data.get("cache_creation_input_tokens") or 0
        split = data.get("cache_creation") or {}
        w1h = split.get("ephemeral_1h_input_tokens") or 0
        w5m = split.get("ephemeral_5m_input_tokens") or (written - w1h)
        return cls(input_tokens=data.get("input_tokens") or 0,
                   output_tokens=data.get("output_tokens") or 0,
                   cache_write_5m=w5m, cache_write_1h=w1h,
                   cache_read=data.get("cache_read_input_tokens") or 0)


_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_write_5m", "cache_write_1h", "cache_read")


class CallRecord(_Frozen):
    """One attempt of one call, as the Ledger stores it. Idempotent by (call_id, attempt)."""

    kind: Literal["call"] = "call"
    call_id: str
    """Stable across the retries of one logical call."""
    attempt: int = Field(ge=0)
    """0 for the first attempt, 1 for the first retry, ..."""
    incarnation: str = ""
    """The recording actor's incarnation (fencing: a zombie's late records are recognisable)."""
    run_id: str
    topology: str = ""
    agent: str
    """The agent's name, ``run/topology/role[-i]``."""
    role: str = ""
    tier: Tier
    model: str
    status: CallStatus
    usage: Usage = Usage()
    source: CallSource = "api"
    speculative: bool = False
    """A speculative first-of-N attempt (winner or loser)."""
    streamed: bool = False
    http_status: int | None = None
    error_type: str | None = None
    """The API's ``error.type`` (``rate_limit_error``...) or ``connection_error``."""
    request_id: str | None = None
    started_at: float
    """Unix time the attempt was sent."""
    latency_s: float = 0.0
    """From sending to the last byte (or the failure)."""
    ttft_s: float | None = None
    """Time to the first token, for streamed calls."""


class TextBlock(_Frozen):
    """Text the model wrote."""

    kind: Literal["text"] = "text"
    text: str


class ToolUseBlock(_Frozen):
    """The model asking for a tool call."""

    kind: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Annotated[TextBlock | ToolUseBlock, Field(discriminator="kind")]


class Turn(_Frozen):
    """One turn of a conversation, in the API's shape (``content`` as the API takes it)."""

    kind: Literal["turn"] = "turn"
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class AskRequest(_Frozen):
    """What a caller asks an agent. Validated where it is built, before any actor call."""

    kind: Literal["ask"] = "ask"
    prompt: str = Field(min_length=1)
    """The user turn."""
    max_tokens: int = Field(default=1024, gt=0)
    """Upper bound on output tokens (reserved against limits and budget until settled)."""
    system: str | None = None
    """Overrides the agent's system prompt for this request."""
    cache_system: bool = False
    """Mark the system prompt as a prompt-cache breakpoint (shared instructions)."""
    history: tuple[Turn, ...] = ()
    """Earlier turns to send before ``prompt`` (in addition to the agent's own memory)."""
    remember: bool = False
    """Append this exchange to the agent's conversation memory."""
    stop_sequences: tuple[str, ...] = ()
    run_id: str | None = None
    """Attribute the call to this run (default: the agent's run)."""
    role: str | None = None
    """Attribute the call to this logical role (a host actor serving many logical agents)."""
    call_id: str | None = None
    """Idempotency key of the logical call; generated when absent."""
    cache: bool | None = None
    """Answer from (and store in) the response cache; None: the agent's setting."""
    cache_ttl: str | None = None
    """How long a reply stored by this call lives (``"1h"``, ``"7d"``); None: the agent's."""
    prompt_cache: bool | None = None
    """Automatic prompt-cache breakpoints for this call; None: the agent's setting."""
    speculative: int | None = None
    """Run this many attempts at once (1-8) and keep the first valid reply; the losers are
    cancelled at once and billed for what they used (default: the agent's policy)."""
    speculative_tiers: tuple[Tier, ...] = ()
    """Tiers of the speculative attempts, cycled (default: every attempt on the routed tier)."""
    output_schema: type[BaseModel] | None = None
    """The reply's text must parse as this model's JSON, or the call goes one tier up."""
    check: Callable[[str], bool] | None = None
    """The reply's text must pass this check, or the call goes one tier up (a picklable
    function: it runs inside the agent)."""
    restart_on_error: bool | None = None
    """A stream that fails after showing text is retried from scratch, after a
    ``StreamRestarted`` item telling the caller to discard the text shown so far (default:
    the agent's ``restart_on_error``, off: text already shown is never replayed)."""

    _check_ttl = field_validator("cache_ttl")(lambda v: _valid_ttl(v))

    @field_validator("speculative")
    @classmethod
    def _speculation_fits(cls, n: int | None) -> int | None:
        return _check_speculative(n)


def _check_speculative(n: int | None) -> int | None:
    """One clear message for a bad N, raised where the request is built (before any call)."""
    if n is not None and not 1 <= n <= MAX_SPECULATIVE:
        raise ValueError(f"speculative must be from 1 to {MAX_SPECULATIVE} attempts, got {n}")
    return n


class Reply(_Frozen):
    """An agent's answer, with what it cost (summed over the tool loop and retries)."""

    kind: Literal["reply"] = "reply"
    text: str
    """The text blocks of the final model turn, joined."""
    content: tuple[ContentBlock, ...] = ()
    stop_reason: str | None = None
    agent: str
    tier: Tier
    model: str
    usage: Usage = Usage()
    cost_usd: Decimal = Decimal(0)
    """From the price table; the Ledger is authoritative and equal."""
    calls: int = 1
    """API calls made (tool turns and summaries included, retries not)."""
    attempts: int = 1
    """HTTP attempts made (retries included)."""
    latency_s: float = 0.0
    ttft_s: float | None = None
    call_ids: tuple[str, ...] = ()
    cache_hits: int = 0
    """Calls answered by the response cache (free; their usage is not in ``usage``)."""
    saved_usd: Decimal = Decimal(0)
    """What the cache hits would have cost: the original calls' cost."""
    speculative_losers: int = 0
    """Speculative attempts cancelled (or failed) because another one won; in the cost."""
    escalations: int = 0
    """Times the reply failed its validation and the call went one tier up; in the cost."""
    possibly_billed: int = 0
    """Attempts sent that got no answer (connection lost, timeout): the API may have billed
    them. Not in ``usage``/``cost_usd``; their reservation is in ``possibly_billed_usd``."""
    possibly_billed_usd: Decimal = Decimal(0)
    """The most those attempts may have cost (input estimate + ``max_tokens`` each): the
    call's cost may be up to ``cost_usd + possibly_billed_usd``."""


class TextDelta(_Frozen):
    """A piece of streamed text, relayed as it arrives."""

    kind: Literal["text_delta"] = "text_delta"
    text: str


class StreamRestarted(_Frozen):
    """The stream failed after showing text and starts again from scratch (opt-in:
    ``restart_on_error``): discard the text shown so far; the deltas that follow are the
    new attempt's."""

    kind: Literal["stream_restarted"] = "stream_restarted"
    attempt: int
    """The attempt about to start (1 for the first retry)."""
    reason: str
    """Why the previous attempt failed (our error's message, never a header or key)."""


StreamItem = Annotated[TextDelta | StreamRestarted | Reply, Field(discriminator="kind")]
"""What ``Agent.stream`` yields: text deltas (with a ``StreamRestarted`` before the text of
each restart, when the caller opted in), then exactly one ``Reply``."""


class AgentSpec(_Frozen):
    """Who an agent is: its name, role, tier and standing instructions (a value, not an actor).

    A host actor can serve many logical agents; a long-lived role gets an actor of its own.
    """

    kind: Literal["agent_spec"] = "agent_spec"
    name: str = Field(min_length=1)
    """Unique within the cluster's namespace; shown in the dashboard: ``run/topology/role-i``."""
    role: str = ""
    tier: Tier = "haiku"
    model: str | None = None
    """A model id overriding the tier's default (must be in the price table)."""
    system: str | None = None
    """Standing instructions sent as the system prompt."""
    run_id: str = "default"
    topology: str = ""
    max_turns: int = Field(default=8, gt=0)
    """Cap on model turns of one ``ask`` when tools are used."""
    memory_budget_tokens: int = Field(default=20_000, gt=0)
    """Above this, older remembered turns are replaced by a haiku-written summary."""
    cache: bool | None = None
    """Answer repeated requests from the response cache; None: the runtime's
    ``RAYTROUPE_CACHE`` (off by default: a repeat returns the first sample).
    See ``docs/configuration.md``."""
    cache_ttl: str | None = None
    """How long a cached reply lives: a number and a unit, s, m, h, d or w (``"7d"``); None:
    the runtime's ``RAYTROUPE_CACHE_TTL`` (``1d``)."""
    prompt_cache: bool = True
    """Automatic prompt-cache breakpoints on shared prefixes (system, tools, history)."""
    speculative: int = 1
    """Attempts per call by default, first valid reply wins (1-8; a request may override)."""
    restart_on_error: bool = False
    """Restart a stream that fails after showing text (``AskRequest.restart_on_error``)."""
    router: Literal["auto"] | Callable[[AskRequest], Tier] | None = None
    """Pick the tier per request: ``"auto"`` is the guide's decision tree
    (:func:`actors.router.route`), a function ``(AskRequest) -> tier`` replaces it; None
    always uses ``tier``."""

    _check_ttl = field_validator("cache_ttl")(lambda v: _valid_ttl(v))

    @field_validator("speculative")
    @classmethod
    def _speculation_fits(cls, n: int) -> int:
        return _check_speculative(n) or 1


def _valid_ttl(value: str | None) -> str | None:
    """A TTL the response cache understands, checked where the request or spec is built."""
    if value is not None:
        from actors.response_cache import parse_ttl  # response_cache imports this module

        parse_ttl(value)
    return value
