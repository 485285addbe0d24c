"""Every error raytroupe raises, classed by what the user can do about it.

The root lives here, in the lowest package; ``topologies`` and ``cluster`` subclass it.

    RaytroupeError
    ├── UsageError (ValueError)          fix your code or config, then run again
    │   ├── ConfigError                  a setting, option or config file is wrong
    │   ├── MessageTypeError (TypeError) a channel or actor got a message of the wrong type
    │   └── PromptTooLongError           the prompt exceeds the model's context window
    ├── SingletonLost                    the RateLimiter, Ledger or emulator is gone for good
    ├── BudgetExceeded                   the run's budget would be crossed; nothing sent
    └── CallFailed                       the API refused or failed a call (after retries)
        ├── RateLimited                  429; carries retry_after
        ├── Overloaded                   529 / 5xx; the API is struggling, try later
        ├── RequestRejected              400 / 401 / 403 / 404 / 413; retrying will not help
        ├── QuotaExhausted               402 or a spend-limit 429; top up or raise the limit
        ├── ConnectionFailed             no response: connection dropped, timed out
        ├── AgentLost                    the Agent died with the call in flight: maybe billed
        └── AgentUnavailable             the Agent stayed down: the call was never sent

SDK exceptions never cross an actor boundary: they hold the request headers, and so the API key
(see ``docs/reliability.md`` §4). The Agent translates them into a ``CallFailed`` that carries
only status, error type, request id and message. Every class pickles through Ray with its
fields (``__reduce__``), so callers can ``except RateLimited`` on a ``ray.get``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class RaytroupeError(Exception):
    """Root of every raytroupe error."""


class UsageError(RaytroupeError, ValueError):
    """Misuse: the input, configuration or arguments are wrong. Fix them and run again."""


class ConfigError(UsageError):
    """A setting, CLI option or config file is invalid; the message names it."""


class MessageTypeError(UsageError, TypeError):
    """A message of the wrong type was sent; the message names the channel and both types."""


class PromptTooLongError(UsageError):
    """The prompt is over the model's context window; raised before any HTTP call."""

    def __init__(self, model: str, tokens: int, limit: int) -> None:
        super().__init__(
            f"prompt is too long for {model}: about {tokens:,} tokens > {limit:,} maximum; "
            "shorten it, summarise the context, or map-reduce the input"
        )
        self.model, self.tokens, self.limit = model, tokens, limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model, self.tokens, self.limit))


class BudgetExceeded(RaytroupeError):
    """The call would push the run past its budget; it was not sent.

    The message names the budget as the user sets it (``--budget``, ``budget_usd=``).
    """

    def __init__(self, run_id: str, cap_usd: Decimal, committed_usd: Decimal,
                 needed_usd: Decimal) -> None:
        super().__init__(
            f"run {run_id!r}: budget ${cap_usd} would be exceeded: ${committed_usd} spent or "
            f"reserved, the next call may cost up to ${needed_usd}; raise the budget "
            "(--budget, budget_usd=) or lower max_tokens"
        )
        self.run_id, self.cap_usd = run_id, cap_usd
        self.committed_usd, self.needed_usd = committed_usd, needed_usd

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.cap_usd, self.committed_usd, self.needed_usd))


class SingletonLost(RaytroupeError):
    """A cluster singleton died for good and no new one answered under its name in time."""

    def __init__(self, name: str, namespace: str, waited_s: float) -> None:
        super().__init__(
            f"the cluster's {name!r} actor (namespace {namespace!r}) is gone and none answered "
            f"under its name within {waited_s:.0f} s; start it again with `raytroupe up` or "
            "cluster.init(), then rerun")
        self.name, self.namespace, self.waited_s = name, namespace, waited_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.namespace, self.waited_s))


class CallFailed(RaytroupeError):
    """An API call failed for good. Holds plain fields only, never headers or the key."""

    def __init__(self, message: str, *, status: int | None = None, error_type: str | None = None,
                 request_id: str | None = None, attempts: int = 1,
                 possibly_billed: int = 0) -> None:
        super().__init__(message)
        self.message, self.status, self.error_type = message, status, error_type
        self.request_id, self.attempts = request_id, attempts
        self.possibly_billed = possibly_billed
        """Attempts of this call sent without an answer: the API may have billed them (the
        Ledger holds each at its reservation, flagged ``possibly_billed``)."""

    def _fields(self) -> dict[str, Any]:
        return {"status": self.status, "error_type": self.error_type,
                "request_id": self.request_id, "attempts": self.attempts,
                "possibly_billed": self.possibly_billed}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self._fields()))

    def __str__(self) -> str:
        where = f" (HTTP {self.status}, {self.error_type}, request {self.request_id})" \
            if self.status else ""
        billed = f"; the cost may include {self.possibly_billed} possibly-billed attempt(s) " \
            "(sent, no answer; recorded at their reservation)" if self.possibly_billed else ""
        return f"{self.message}{where}{billed}"


class RateLimited(CallFailed):
    """429 rate_limit_error; ``retry_after`` is the seconds the API asked us to wait."""

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after

    def _fields(self) -> dict[str, Any]:
        return {**super()._fields(), "retry_after": self.retry_after}


class Overloaded(CallFailed):
    """529 overloaded_error or another 5xx: the API is struggling; try again later."""


class RequestRejected(CallFailed):
    """The API rejected the request itself (400, 401, 403, 404, 413): retrying won't help."""


class QuotaExhausted(CallFailed):
    """402 billing_error, or a 429 for a spend limit: no retry succeeds until it is raised."""


class ConnectionFailed(CallFailed):
    """No response: the connection dropped or timed out. The call may have been billed."""


class AgentLost(CallFailed):
    """The Agent's process died (killed, crashed) while this call was in flight.

    The call may have been billed: it may have reached the API before the process died, and
    the API takes no idempotency key, so it is not re-sent for you (``docs/reliability.md``).
    Calls made after the death was seen wait for the restart instead (``AgentUnavailable`` if
    it never comes).
    """

    def __init__(self, message: str, **fields: Any) -> None:
        fields.setdefault("error_type", "agent_lost")
        fields.setdefault("possibly_billed", 1)
        super().__init__(message, **fields)

    def __str__(self) -> str:
        return self.message  # it says what may have been billed, and why


class AgentUnavailable(CallFailed):
    """The Agent was down (restarting, or dead for good) and the call was never sent: not
    billed; safe to send again once the agent is back."""

    def __init__(self, message: str, **fields: Any) -> None:
        fields.setdefault("error_type", "agent_unavailable")
        super().__init__(message, **fields)


def _rebuild(cls: type[CallFailed], message: str, fields: dict[str, Any]) -> CallFailed:
    """Unpickle a ``CallFailed`` subclass with its keyword fields."""
    return cls(message, **fields)


class InvalidReply(RaytroupeError):
    """Every tier up to the top answered, and no reply passed the request's validation."""
