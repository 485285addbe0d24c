"""The one base of the data that crosses actors and processes: frozen and strict.

Every message, config and record in ``actors`` and ``topologies`` subclasses :class:`Frozen`:
data in flight never changes under a reader (a pydantic model that is ``frozen`` raises on
assignment and hashes by value), and a misspelt field is an error instead of being dropped.

Example:
    >>> class Note(Frozen):
    ...     text: str
    >>> Note(text="hi") == Note(text="hi")
    True
    >>> Note(text="hi", txt="typo")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Note
    ...
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Frozen"]


class Frozen(BaseModel):
    """A frozen pydantic model that forbids unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
