"""The docstring examples of the report, compare, loadtest and run-display modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["cluster.compare", "cluster.compare_command", "cluster.loadtest",
           "cluster.loadtest_command", "cluster.report_command", "cluster.report_data",
           "cluster.report_html", "cluster.report_png", "cluster.run_display"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    failed, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failed == 0
