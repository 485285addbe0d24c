"""The emulator's docstring examples run, so they stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["emulator.config", "emulator.tokens", "emulator.output", "emulator.latency",
           "emulator.faults", "emulator.stats", "emulator.validation", "emulator.app",
           "emulator.default_reply"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name: str) -> None:
    module = importlib.import_module(name)
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
