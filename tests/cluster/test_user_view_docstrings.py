"""The docstring examples of the compare, loadtest and run-display modules run.

Only modules with runnable examples are listed: each must run at least one (a module whose
examples were all skipped would pass whatever its code did). The report and command modules
are covered by their CLI tests instead."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["cluster.compare", "cluster.loadtest", "cluster.run_display"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    failed, tried = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failed == 0, f"{failed} of {tried} examples failed in {name}"
