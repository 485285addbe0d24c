"""A local stand-in for the Anthropic Messages API on 127.0.0.1, driven by the real SDK.

Real HTTP and the API's wire format (``docs/messages-api.md``): whole and streamed replies, errors,
rate limits with their headers, prompt caching, Message Batches, token counting, and a bill
(``GET /_emulator/stats``) priced from the one price table. Replies are deterministic
functions of the request, or come from a function you register.

Example:
    >>> from emulator import run_emulator
    >>> with run_emulator() as emu:  # doctest: +SKIP
    ...     client = anthropic.Anthropic(base_url=emu.base_url, api_key=emu.api_key)
"""

from emulator.app import build_app
from emulator.config import EmulatorConfig, Faults, Limits
from emulator.responders import ResponderReply, ScriptedError
from emulator.server import EmulatorHandle, EmulatorProcess, run_emulator

__all__ = [
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorProcess",
    "Faults",
    "Limits",
    "ResponderReply",
    "ScriptedError",
    "build_app",
    "run_emulator",
]
