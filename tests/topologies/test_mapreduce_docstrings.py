"""The docstring examples of the map-reduce modules run, and every module has at least one."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["topologies.corpus", "topologies.chunking", "topologies.chunk_store",
           "topologies.reduce_tree", "topologies.mapper_pool", "topologies.mapreduce_run",
           "topologies.mapreduce", "cluster.run_mapreduce_command"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    failed, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failed == 0, f"{failed} of {tried} examples failed in {name}"
