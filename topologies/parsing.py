"""Reading structured answers out of model text: the JSON object an agent was asked for.

Models wrap JSON in prose or code fences now and then; these functions find the first JSON
object in the text and validate it against a pydantic model, so an architecture gets a typed
value or a :class:`TopologyError` that quotes what the agent actually wrote.

Example:
    >>> class Plan(BaseModel):
    ...     subtopics: list[str]
    >>> parse_json('Sure! ```json\\n{"subtopics": ["a", "b"]}\\n```', Plan, "lead").subtopics
    ['a', 'b']
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from topologies.errors import TopologyError

M = TypeVar("M", bound=BaseModel)

__all__ = ["bullet_lines", "find_json_object", "json_schema_prompt", "parse_json"]


def find_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object embedded in ``text``, or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def parse_json(text: str, model: type[M], agent: str) -> M:
    """Validate the first JSON object in ``text`` as ``model``.

    Raises:
        TopologyError: no JSON object, or one that does not fit ``model`` (quoting the text).
    """
    found = find_json_object(text)
    if found is None:
        raise TopologyError(f"{agent} did not answer in JSON as asked: {_clip(text)!r}")
    try:
        return model.model_validate(found)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise TopologyError(f"{agent}'s JSON does not fit {model.__name__} ({problems}): "
                            f"{_clip(text)!r}") from None


def json_schema_prompt(model: type[BaseModel], **constraints: Any) -> str:
    """A compact JSON schema of ``model`` for a prompt (``constraints`` patch its properties).

    Example:
        >>> class Plan(BaseModel):
        ...     subtopics: list[str]
        >>> json.loads(json_schema_prompt(Plan, subtopics={"minItems": 2}))["properties"]
        {'subtopics': {'items': {'type': 'string'}, 'type': 'array', 'minItems': 2}}
    """
    schema = model.model_json_schema()
    properties = {}
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        properties[name] = {**prop, **constraints.get(name, {})}
    return json.dumps({"type": "object", "properties": properties,
                       "required": schema.get("required", [])})


def bullet_lines(text: str) -> list[str]:
    """Lines that look like list items (``-``, ``*``, ``1.``), without their markers."""
    items = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped[:1] in "-*•":
            items.append(stripped[1:].strip())
        elif stripped[:1].isdigit() and stripped.split(" ", 1)[0].rstrip(".)").isdigit():
            items.append(stripped.split(" ", 1)[1].strip() if " " in stripped else "")
    return [item for item in items if item]


def _clip(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
