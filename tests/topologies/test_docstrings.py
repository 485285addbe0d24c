"""The docstring examples of the topologies modules run (those that need Ray are skipped)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["topologies", "topologies.architecture", "topologies.builtin_plugins",
           "topologies.channel", "topologies.critic_actor", "topologies.debate",
           "topologies.messages", "topologies.parsing", "topologies.pipeline",
           "topologies.plugins", "topologies.reflexion", "topologies.research",
           "topologies.run_context", "topologies.session", "topologies.specialist_pool",
           "topologies.tool_events"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failed == 0
