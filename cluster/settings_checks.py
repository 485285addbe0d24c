"""The checks behind :class:`cluster.settings.Settings`' validators, and their one-line errors.

Kept apart from ``settings.py`` so that file stays the list of settings. Every check runs when
the settings are read, before Ray starts: a bad value costs the user a line, not a 13-second
wait for Ray followed by a traceback from inside an actor (issue 12).

Example:
    >>> check_base_url("not-a-url")
    Traceback (most recent call last):
    ValueError: 'not-a-url' is not an http(s) URL such as https://api.anthropic.com
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, SecretStr, ValidationError

_RESOLVE_WAIT_S = 3.0
"""Longest wait for the resolver; a slower one is not a verdict, so the check passes."""
_NO_SUCH_NAME = frozenset(code for code in (getattr(socket, "EAI_NONAME", None),
                                            getattr(socket, "EAI_NODATA", None)) if code)


def check_api_key(key: SecretStr) -> SecretStr:
    """Refuse a key that cannot go in an HTTP header (a pasted newline, a space).

    The SDK would send it and fail every attempt with a bare ``connection_error``. The message
    never shows the key.
    """
    secret = key.get_secret_value()
    if not secret.isascii() or any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise ValueError("the key contains a line break, a space or a character that cannot "
                         "go in an HTTP header (the key is not shown): set it again without it")
    return key


def check_base_url(url: str | None) -> str | None:
    """Refuse a base URL the SDK cannot use: not http(s), no host, or a host with no address.

    Blank means unset. The host's name is resolved here (at most a few seconds) unless a proxy
    is configured, since then the proxy resolves it: an unresolvable host otherwise shows only
    as ``connection_error`` after 19 s of retries.
    """
    if url is None or not url.strip():
        return None
    example = "such as https://api.anthropic.com"
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"{url!r} is not a valid URL {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname \
            or any(ch.isspace() for ch in url):
        raise ValueError(f"{url!r} is not an http(s) URL {example}")
    reason = _unresolvable(parts.hostname)
    if reason is not None:
        raise ValueError(f"{url!r}: the host {parts.hostname!r} does not resolve ({reason})")
    return url


def _unresolvable(host: str) -> str | None:
    """The resolver's reason when ``host`` has no address; None when it has one or we cannot
    tell (a proxy resolves names for us, the resolver is slow or failing transiently)."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if urllib.request.getproxies():
        return None
    outcome: list[str | None] = []

    def look_up() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome.append(None)
        except socket.gaierror as exc:
            outcome.append(exc.strerror if exc.errno in _NO_SUCH_NAME else None)
        except (OSError, UnicodeError):
            outcome.append(None)

    # getaddrinfo has no timeout of its own; a daemon thread bounds the wait.
    worker = threading.Thread(target=look_up, name="raytroupe-resolve", daemon=True)
    worker.start()
    worker.join(_RESOLVE_WAIT_S)
    return outcome[0] if outcome else None


def settings_error(error: ValidationError, settings_cls: Any) -> str:
    """One line naming each bad variable as the user sets it (``RAYTROUPE_RPM``), with its
    value, except a secret's, and why it is refused."""
    problems = []
    for problem in error.errors(include_url=False):
        name, secret = _variable(settings_cls, str(problem["loc"][0]) if problem["loc"] else "")
        if problem["type"] == "value_error":  # our own validators name the value themselves
            problems.append(f"{name}: {problem['ctx']['error']}")
        elif secret:
            problems.append(f"{name} is invalid: {problem['msg']}")
        else:
            problems.append(f"{name}={problem['input']!r} is invalid: {problem['msg']}")
    return "; ".join(problems)


def _variable(settings_cls: Any, given: str) -> tuple[str, bool]:
    """The environment variable of the field ``given`` (a field name or an alias), and whether
    the field is a secret."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    for name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else []
        if given.lower() == name or given.lower() in (c.lower() for c in choices):
            variable = choices[0] if choices else f"{prefix}{name}".upper()
            return variable, "SecretStr" in str(field.annotation)
    return given, False
