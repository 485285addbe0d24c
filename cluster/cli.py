"""The ``raytroupe`` command: one Typer app; each command lives in a module of its own.

Errors are caught only here, at the edge: a raytroupe error becomes one clear line on stderr
and a non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from actors.errors import RaytroupeError, UsageError

app = typer.Typer(
    name="raytroupe",
    help="An actor-model runtime for multi-agent Claude applications, built on Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    """Import each command module; each adds its command(s) to ``app``."""
    # run_mapreduce_command adds ``mapreduce`` to run_command's ``run`` group.
    from cluster import (  # noqa: F401
        compare_command,
        demo_command,
        emulator_command,
        ledger_command,
        loadtest_command,
        report_command,
        run_command,
        run_mapreduce_command,
    )

    # report, compare, loadtest: plain functions that raise our errors, registered here.
    for name, function in (("report", report_command.report_command),
                           ("compare", compare_command.compare_command),
                           ("loadtest", loadtest_command.loadtest_command)):
        if name not in {command.name for command in app.registered_commands}:
            app.command(name)(_one_line_errors(function))


def _one_line_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with our errors turned into one red line and exit 2 (usage) or 1."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        from cluster.run_command import cli_errors

        with cli_errors():
            return function(*args, **kwargs)

    return guarded


def main() -> None:
    """Console-script entry point: run the app, turning our errors into one line + exit code."""
    _register_commands()
    try:
        app()
    except UsageError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except RaytroupeError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)
