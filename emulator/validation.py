"""Request validation: the 400s and 404s the API gives, with messages naming the bad field.

Everything here raises :class:`ApiError`, which the routes (and the app's error middleware)
render as the API's JSON error. Checks follow ``docs/messages-api.md`` §1 and §2; wording copies
the API where it is known (``max_tokens: Field required``, ``prompt is too long: N tokens > M
maximum``) and otherwise names the field path the way the API does (``messages.0.role``).
"""

from __future__ import annotations

import json
from typing import Any

from actors.tiers import ModelSpec, PriceTable

__all__ = [
    "VERSIONS",
    "ApiError",
    "check_version",
    "parse_body",
    "validate_count",
    "validate_create",
]

VERSIONS = ("2023-06-01", "2026-10-21")
"""The ``anthropic-version`` values the emulator accepts."""

_SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
_TOOL_CHOICES = ("auto", "any", "tool", "none")


class ApiError(Exception):
    """An API error to send back: the error type, its message, optional status and headers.

    Example:
        >>> ApiError("invalid_request_error", "max_tokens: Field required").error_type
        'invalid_request_error'
    """

    def __init__(self, error_type: str, message: str, *, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status
        self.headers = headers or {}


def _invalid(message: str) -> ApiError:
    return ApiError("invalid_request_error", message)


def check_version(version: str | None) -> str:
    """Return the request's ``anthropic-version``; raise 400 when missing or unknown."""
    if not version:
        raise _invalid("anthropic-version: header is required")
    if version not in VERSIONS:
        raise _invalid(f"anthropic-version: unknown version {version!r}; "
                       f"use one of {', '.join(VERSIONS)}")
    return version


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a JSON object body; garbage or a non-object is a 400."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"There was an error parsing the body: {exc}") from None
    if not isinstance(body, dict):
        raise _invalid("request body: must be a JSON object")
    return body


def validate_create(body: dict[str, Any], version: str | None, prices: PriceTable) -> ModelSpec:
    """Check a Messages create request; return the model's spec.

    Args:
        body: The decoded request.
        version: Its ``anthropic-version`` (None for batch requests, which have no header).
        prices: The price table, which is also the list of known models.

    Raises:
        ApiError: 400 ``invalid_request_error`` naming the field, or 404 ``not_found_error``
            for an unknown model.
    """
    spec = _check_common(body, version, prices)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid(f"max_tokens: must be greater than or equal to 1, got {max_tokens}")
    if max_tokens > spec.max_output_tokens:
        raise _invalid(f"max_tokens: {max_tokens} > {spec.max_output_tokens}, which is the "
                       f"maximum allowed number of output tokens for {body['model']}")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean")
    _check_stop_sequences(body.get("stop_sequences"))
    return spec


def validate_count(body: dict[str, Any], version: str | None, prices: PriceTable) -> ModelSpec:
    """Check a ``count_tokens`` request (create's inputs without ``max_tokens``)."""
    return _check_common(body, version, prices)


def _check_common(body: dict[str, Any], version: str | None, prices: PriceTable) -> ModelSpec:
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str):
        raise _invalid("model: Input should be a valid string")
    if "messages" not in body:
        raise _invalid("messages: Field required")
    spec = prices.models.get(model)
    if spec is None:
        raise ApiError("not_found_error", f"model: {model}")
    if version == "2026-10-21":
        for name in _SAMPLING_FIELDS:
            if name in body:
                raise _invalid(f"{name}: is not supported in anthropic-version 2026-10-21; "
                               "remove it (sampling parameters were removed in this version)")
    else:
        _check_sampling(body)
    _check_system(body.get("system"))
    _check_messages(body["messages"], version)
    _check_tools(body.get("tools"), body.get("tool_choice"))
    _check_cache_control(body.get("cache_control"), "cache_control")
    return spec


def _check_sampling(body: dict[str, Any]) -> None:
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is not None and (not _is_number(value) or not 0.0 <= value <= high):
            raise _invalid(f"{name}: Input should be a number between 0 and {high:g}")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _invalid("top_k: Input should be a non-negative integer")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _invalid("system: Input should be a valid string or a list of text blocks")
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"system.{i}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str) or not block["text"]:
            raise _invalid(f"system.{i}.text: text content blocks must be non-empty")
        _check_cache_control(block.get("cache_control"), f"system.{i}.cache_control")


def _check_messages(messages: Any, version: str | None) -> None:
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _invalid(f"messages.{i}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _invalid("messages.0.role: the first message must use the 'user' role")
        _check_content(message.get("content"), f"messages.{i}.content", role, version)


def _check_content(content: Any, where: str, role: str, version: str | None) -> None:
    if content is None:
        raise _invalid(f"{where}: Field required")
    if isinstance(content, str):
        if not content:
            raise _invalid(f"{where}: messages must have non-empty content")
        return
    if not isinstance(content, list):
        raise _invalid(f"{where}: Input should be a valid string or list of content blocks")
    if not content:
        raise _invalid(f"{where}: messages must have non-empty content")
    for j, block in enumerate(content):
        at = f"{where}.{j}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _invalid(f"{at}.type: Field required")
        if block["type"] == "text" and (not isinstance(block.get("text"), str)
                                        or not block["text"]):
            raise _invalid(f"{at}.text: text content blocks must be non-empty")
        if version == "2026-10-21":
            _check_2026_block(block, at, role)
        _check_cache_control(block.get("cache_control"), f"{at}.cache_control")


def _check_2026_block(block: dict[str, Any], at: str, role: str) -> None:
    """The two content rules added by ``2026-10-21`` (``docs/messages-api.md`` §1)."""
    if role == "assistant" and block["type"] == "document":
        raise _invalid(f"{at}: document blocks are not allowed in assistant messages "
                       "in anthropic-version 2026-10-21")
    if role == "user" and block["type"] == "text" and block.get("citations"):
        raise _invalid(f"{at}.citations: text blocks with citations are not allowed in user "
                       "messages in anthropic-version 2026-10-21")


def _check_tools(tools: Any, tool_choice: Any) -> None:
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _invalid(f"tools.{i}.name: Field required")
            if "input_schema" in tool and not isinstance(tool["input_schema"], dict):
                raise _invalid(f"tools.{i}.input_schema: Input should be a valid dictionary")
            if tool["name"] in names:
                raise _invalid(f"tools: Tool names must be unique ({tool['name']!r} repeats)")
            names.add(tool["name"])
            _check_cache_control(tool.get("cache_control"), f"tools.{i}.cache_control")
    if tool_choice is None:
        return
    if not isinstance(tool_choice, dict) or tool_choice.get("type") not in _TOOL_CHOICES:
        raise _invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    if tool_choice["type"] == "tool" and tool_choice.get("name") not in names:
        raise _invalid(f"tool_choice.name: no tool named {tool_choice.get('name')!r} "
                       "in tools")


def _check_stop_sequences(stops: Any) -> None:
    if stops is None:
        return
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise _invalid("stop_sequences: Input should be a list of non-empty strings")


def _check_cache_control(control: Any, where: str) -> None:
    if control is None:
        return
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        raise _invalid(f"{where}.type: Input should be 'ephemeral'")
    if control.get("ttl", "5m") not in ("5m", "1h"):
        raise _invalid(f"{where}.ttl: Input should be '5m' or '1h'")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
