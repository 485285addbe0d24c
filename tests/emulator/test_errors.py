"""Every refusal the API gives, on the wire: status, error.type, a message naming the field,
and a request id, for bad bodies, bad headers, oversize bodies, and unknown routes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from emulator import EmulatorHandle, run_emulator

HAIKU = "claude-haiku-5-5"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
            "content-type": "application/json"}


def _post(emu: EmulatorHandle, body: bytes | dict[str, Any], *, path: str = "/v1/messages",
          headers: dict[str, str] | None = None, method: str = "POST",
          ) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(emu.base_url + path, data=data, method=method,
                                     headers=_HEADERS if headers is None else headers)
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def _valid(**changes: Any) -> dict[str, Any]:
    body = {"model": HAIKU, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def _assert_error(reply: tuple[int, dict[str, str], dict[str, Any]], status: int,
                  error_type: str, names: str) -> None:
    code, headers, body = reply
    assert code == status, body
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert names in body["error"]["message"]
    assert headers["request-id"] == body["request_id"] and body["request_id"].startswith("req_")


_MARK = {"cache_control": {"type": "ephemeral"}}

BAD_BODIES = [
    # (case, body, status, error type, text the message must contain)
    ("no model", _valid(model=None), 400, "invalid_request_error", "model: Field required"),
    ("no max_tokens", _valid(max_tokens=None), 400, "invalid_request_error",
     "max_tokens: Field required"),
    ("no messages", _valid(messages=None), 400, "invalid_request_error",
     "messages: Field required"),
    ("max_tokens 0", _valid(max_tokens=0), 400, "invalid_request_error", "max_tokens"),
    ("max_tokens not int", _valid(max_tokens="9"), 400, "invalid_request_error", "max_tokens"),
    ("max_tokens over the model's", _valid(max_tokens=64_001), 400, "invalid_request_error",
     "max_tokens: 64001 > 64000"),
    ("no messages at all", _valid(messages=[]), 400, "invalid_request_error", "messages"),
    ("bad role", _valid(messages=[{"role": "system", "content": "x"}]), 400,
     "invalid_request_error", "messages.0.role"),
    ("assistant first", _valid(messages=[{"role": "assistant", "content": "x"}]), 400,
     "invalid_request_error", "messages.0.role"),
    ("empty string content", _valid(messages=[{"role": "user", "content": ""}]), 400,
     "invalid_request_error", "messages.0.content"),
    ("empty block list", _valid(messages=[{"role": "user", "content": []}]), 400,
     "invalid_request_error", "messages.0.content"),
    ("empty text block", _valid(messages=[{"role": "user", "content": [
        {"type": "text", "text": ""}]}]), 400, "invalid_request_error", "messages.0.content.0"),
    ("unknown model", _valid(model="claude-nope-1"), 404, "not_found_error",
     "model: claude-nope-1"),
    ("prompt over the context window",
     _valid(messages=[{"role": "user", "content": "x" * 800_000}]), 400,
     "invalid_request_error", "prompt is too long: 200004 tokens > 200000 maximum"),
    ("tool_choice names no tool", _valid(tool_choice={"type": "tool", "name": "ghost"}), 400,
     "invalid_request_error", "tool_choice.name"),
    ("five cache breakpoints", _valid(messages=[{"role": "user", "content": [
        {"type": "text", "text": f"part {i}", **_MARK} for i in range(5)]}]), 400,
     "invalid_request_error", "A maximum of 4 blocks with cache_control"),
    ("stream not a bool", _valid(stream="yes"), 400, "invalid_request_error", "stream"),
    ("stop_sequences not a list", _valid(stop_sequences="END"), 400, "invalid_request_error",
     "stop_sequences"),
    ("temperature out of range", _valid(temperature=3), 400, "invalid_request_error",
     "temperature"),
]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with run_emulator() as handle:
        yield handle


@pytest.mark.parametrize("case, body, status, error_type, names", BAD_BODIES,
                         ids=[case[0] for case in BAD_BODIES])
def test_a_bad_body_is_refused_naming_the_field(emu: EmulatorHandle, case: str,
                                                body: dict[str, Any], status: int,
                                                error_type: str, names: str) -> None:
    _assert_error(_post(emu, body), status, error_type, names)


@pytest.mark.parametrize("field, value", [("temperature", 0.5), ("top_p", 0.9), ("top_k", 5)])
def test_version_2026_rejects_sampling_fields_that_2023_accepts(
        emu: EmulatorHandle, field: str, value: float) -> None:
    new = {**_HEADERS, "anthropic-version": "2026-10-21"}
    _assert_error(_post(emu, _valid(**{field: value}), headers=new), 400,
                  "invalid_request_error", field)
    assert _post(emu, _valid(**{field: value}))[0] == 200


@pytest.mark.parametrize("headers, names", [
    ({"anthropic-version": "2023-06-01"}, "x-api-key"),
    ({"x-api-key": "", "anthropic-version": "2023-06-01"}, "x-api-key"),
    ({"authorization": "Bearer ", "anthropic-version": "2023-06-01"}, "x-api-key"),
], ids=["no key", "empty x-api-key", "empty bearer"])
def test_a_missing_key_is_a_401(emu: EmulatorHandle, headers: dict[str, str],
                                names: str) -> None:
    _assert_error(_post(emu, _valid(), headers=headers), 401, "authentication_error", names)


@pytest.mark.parametrize("auth", [{"x-api-key": "k1"}, {"authorization": "Bearer k1"}],
                         ids=["x-api-key", "bearer"])
def test_either_auth_header_is_accepted_and_api_keys_restricts_them(
        auth: dict[str, str]) -> None:
    with run_emulator(api_keys=["k1"]) as restricted:
        headers = {"anthropic-version": "2023-06-01", **auth}
        assert _post(restricted, _valid(), headers=headers)[0] == 200
        wrong = {k: v.replace("k1", "k2") for k, v in headers.items()}
        _assert_error(_post(restricted, _valid(), headers=wrong), 401, "authentication_error",
                      "invalid x-api-key")


@pytest.mark.parametrize("version", [None, "2024-01-01"], ids=["missing", "unknown"])
def test_the_version_header_is_required_and_checked(emu: EmulatorHandle,
                                                    version: str | None) -> None:
    headers = {"x-api-key": "k"} | ({"anthropic-version": version} if version else {})
    _assert_error(_post(emu, _valid(), headers=headers), 400, "invalid_request_error",
                  "anthropic-version")


def test_an_oversize_body_is_a_413_and_the_server_carries_on() -> None:
    with run_emulator(max_body_bytes=2_000) as small:
        _assert_error(_post(small, _valid(messages=[{"role": "user", "content": "x" * 4_000}])),
                      413, "request_too_large", "2,000")
        assert _post(small, _valid())[0] == 200


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"],
                         ids=["garbage", "array", "not utf-8"])
def test_a_body_that_is_not_a_json_object_is_a_400(emu: EmulatorHandle, raw: bytes) -> None:
    _assert_error(_post(emu, raw), 400, "invalid_request_error", "")


def test_unknown_paths_and_wrong_methods_are_json_errors(emu: EmulatorHandle) -> None:
    _assert_error(_post(emu, b"", path="/v1/nowhere", method="GET"), 404, "not_found_error",
                  "/v1/nowhere")
    code, headers, body = _post(emu, b"", path="/v1/messages", method="GET")
    _assert_error((code, headers, body), 405, "invalid_request_error", "GET /v1/messages")
    assert "POST" in headers["Allow"]


def test_the_sdk_raises_its_typed_error_and_does_not_retry_a_400(emu: EmulatorHandle) -> None:
    before = emu.stats()["requests"]
    with anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key) as sdk:
        with pytest.raises(anthropic.BadRequestError) as caught:
            sdk.messages.create(model=HAIKU, max_tokens=16,
                                messages=[{"role": "assistant", "content": "x"}])
        with pytest.raises(anthropic.NotFoundError):
            sdk.messages.create(model="claude-none", max_tokens=16,
                                messages=[{"role": "user", "content": "x"}])
    assert caught.value.request_id and caught.value.request_id.startswith("req_")
    assert "messages.0.role" in caught.value.body["error"]["message"]  # type: ignore[index]
    assert emu.stats()["requests"] - before == 2
