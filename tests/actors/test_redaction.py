"""Keys never reach a log line, whichever logger or handler writes it."""

from __future__ import annotations

import logging

import pytest

from actors.redaction import install_key_redaction, redact

KEY = "sk-ant-api03-CANARY_abc-123"


def test_a_key_in_a_log_message_or_its_arguments_is_redacted(
        caplog: pytest.LogCaptureFixture) -> None:
    install_key_redaction()
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        log.info("calling with %s", KEY)
        log.warning(f"failed: Authorization: Bearer {KEY}")
    assert KEY not in caplog.text
    assert caplog.text.count("sk-ant-***") == 2


def test_redact_leaves_other_text_alone() -> None:
    assert redact("no secrets here") == "no secrets here"
