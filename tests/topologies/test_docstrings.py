"""The docstring examples of the topologies modules run, and every module has at least one."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["topologies", "topologies.architecture", "topologies.builtin_plugins",
           "topologies.channel", "topologies.critic_actor", "topologies.debate",
           "topologies.messages", "topologies.parsing", "topologies.pipeline",
           "topologies.plugins", "topologies.reflexion", "topologies.research",
           "topologies.run_context", "topologies.session", "topologies.specialist_pool",
           "topologies.throttle", "topologies.tool_events"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failed, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failed == 0, f"{failed} of {tried} examples failed in {name}"
