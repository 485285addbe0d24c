"""Errors of the topologies room, subclassing the root tree in ``actors/errors.py``.

    RaytroupeError
    ├── UsageError
    │   ├── ConfigError
    │   │   ├── UnknownArchitecture      no architecture registered under that name
    │   │   ├── RoleCardinalityError     too few or too many agents for a role
    │   │   └── PromptTemplateError      a prompt file is missing or names an unset variable
    │   ├── MessageTypeError             a channel was fed the wrong type (from actors.errors)
    │   └── EmptyInputError              an empty prompt, question or input list
    └── TopologyError                    a run could not finish (a stage failed, bad agent output)
        └── ChannelClosed                a message was sent on a channel after ``close()``

Each names the bad value and the fix, so the CLI can print it as one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from actors.errors import ConfigError, MessageTypeError, RaytroupeError, UsageError

__all__ = ["ChannelClosed", "EmptyInputError", "MessageTypeError", "PromptTemplateError",
           "RoleCardinalityError", "TopologyError", "UnknownArchitecture"]


class UnknownArchitecture(ConfigError):
    """No architecture is registered under the requested name."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name, self.available = name, tuple(sorted(available))
        super().__init__(f"unknown architecture {name!r}: choose one of "
                         f"{', '.join(self.available)}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.available))


class RoleCardinalityError(ConfigError):
    """A role was given fewer or more agents than its definition allows."""

    def __init__(self, architecture: str, role: str, count: int, low: int, high: int) -> None:
        self.args_ = (architecture, role, count, low, high)
        bound = f"exactly {low}" if low == high else f"between {low} and {high}"
        super().__init__(f"{architecture}: role {role!r} needs {bound} agents, got {count}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self.args_)


class PromptTemplateError(ConfigError):
    """A prompt file is missing or uses a template variable that has no value."""


class EmptyInputError(UsageError):
    """The prompt, question or input list is empty: there is nothing to work on."""


class TopologyError(RaytroupeError):
    """A run could not finish: a stage failed or an agent's output could not be used."""


class ChannelClosed(TopologyError):
    """A message was sent on a channel that was already closed."""
