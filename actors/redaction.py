"""Keep API keys out of logs: every log record is redacted before any handler sees it.

Nothing in raytroupe logs a key, but a library might (an SDK debug line, a third-party
exception message), and a log line is the one leak that is copied everywhere: Ray ships
worker logs to the driver and the dashboard (``docs/reliability.md`` §4). Installing at the
log-record factory catches every logger and handler of the process, present or future.

Example:
    >>> install_key_redaction()
    >>> redact("key=sk-ant-api03-abc_DEF-123 ok")
    'key=sk-ant-*** ok'
"""

from __future__ import annotations

import logging
import re
from typing import Any

_KEY = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")
_installed = False


def redact(text: str) -> str:
    """Replace anything shaped like an Anthropic key with ``sk-ant-***``."""
    return _KEY.sub("sk-ant-***", text)


def install_key_redaction() -> None:
    """Redact keys in every log record this process makes (idempotent)."""
    global _installed
    if _installed:
        return
    make_record = logging.getLogRecordFactory()

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if "sk-ant-" in message:
            record.msg, record.args = redact(message), None
        return record

    logging.setLogRecordFactory(redacting)
    _installed = True
