"""``raytroupe run mapreduce PATHS... --question "..."``: map-reduce over files, on any cluster.

Paths are files, folders or globs (quote globs so the shell leaves them alone). Files that are
not text, or cannot be read, are skipped and listed after the result; a run with nothing to read
is a usage error (exit 2). Chunk results are stored under the data dir, so running the same
command again after a crash or a budget stop pays only for the chunks still missing
(``--no-resume`` maps everything again).

Example:
    raytroupe run mapreduce examples/corpus --question "What caused the great flood?" \\
        --mapper haiku --reducer sonnet --max-parallel 16 --budget 2.00
    ray job submit --address http://127.0.0.1:8265 -- \\
        raytroupe run mapreduce /data/reports --question "..." --address auto

Skipped inputs are listed after the answer, each with its reason:
    >>> import sys
    >>> from types import SimpleNamespace
    >>> from topologies.corpus import SkippedFile
    >>> result = SimpleNamespace(skipped=(SkippedFile(path="map.png", reason="binary file"),))
    >>> _print_skipped(Console(file=sys.stdout, width=80), result)
    skipped 1 input(s):
      map.png: binary file
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cluster.run_command import (
    Address,
    Agents,
    Budget,
    ConfigFile,
    Json,
    Model,
    Quiet,
    Report,
    Stream,
    _money,
    run_architecture,
)


def mapreduce(
    paths: Annotated[list[str], typer.Argument(
        help="Files, folders or globs to read ('docs/**/*.md').")],
    question: Annotated[str, typer.Option(
        "--question", help="What to find out from the files.")],
    mapper: Annotated[str | None, typer.Option(
        "--mapper", help="The mappers' tier or model id. Default: haiku.")] = None,
    reducer: Annotated[str | None, typer.Option(
        "--reducer", help="The reducer's tier or model id. Default: sonnet.")] = None,
    max_parallel: Annotated[int | None, typer.Option(
        "--max-parallel", help="Mapper calls in flight at once. Default: 16.")] = None,
    chunk_size: Annotated[int | None, typer.Option(
        "--chunk-size", help="Tokens per chunk. Default: 1500.")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(
        "--chunk-overlap", help="Tokens repeated between chunks. Default: 100.")] = None,
    hosts: Annotated[int | None, typer.Option(
        "--hosts", help="Mapper host actors. Default: one per node, at least 2.")] = None,
    root: Annotated[Path | None, typer.Option(
        "--root", help="Refuse inputs that resolve outside this folder.")] = None,
    no_resume: Annotated[bool, typer.Option(
        "--no-resume", help="Map every chunk again instead of reusing stored results.")] = False,
    batch: Annotated[bool, typer.Option(
        "--batch", help="Map through the Message Batches API: half price, answered within "
        "hours (usually minutes); resumable.")] = False,
    model: Model = None, agent: Agents = None, budget: Budget = None, address: Address = None,
    config: ConfigFile = None, stream: Stream = False, quiet: Quiet = False,
    json_out: Json = False, report: Report = None,
) -> None:
    """Mappers read files in chunks across the cluster; a reducer answers the question."""
    from actors.errors import UsageError
    from topologies.mapreduce import MapReduceTask

    if batch and stream:
        # Checked before anything runs: a batch is answered as a whole, minutes to hours
        # later, so there is nothing to stream, and --stream would hide the batch progress.
        raise UsageError("--batch cannot be combined with --stream: batch results arrive "
                         "whole, not as a stream; drop one of them")
    task = MapReduceTask(question=question, inputs=tuple(paths))
    result = run_architecture(
        "mapreduce", task,
        {"mapper_model": mapper, "reducer_model": reducer,
         "max_parallel_mappers": max_parallel, "chunk_size": chunk_size,
         "chunk_overlap": chunk_overlap, "mapper_hosts": hosts, "root": root,
         "resume": False if no_resume else None, "batch": batch or None},
        model=model, agents=agent, budget=_money(budget), address=address,
        config_file=config, stream=stream, quiet=quiet, unit="chunks", as_json=json_out,
        report=report, role="mapper")
    _print_skipped(Console(stderr=True), result)


def _print_skipped(console: Console, result: object) -> None:
    """List the inputs that were not read, with the reason (on stderr: not part of the answer)."""
    skipped = getattr(result, "skipped", ())
    if skipped:
        console.print(f"[bold]skipped[/] {len(skipped)} input(s):", highlight=False)
        for entry in skipped:
            console.print(f"  {entry.path}: {entry.reason}", markup=False, highlight=False)
