"""The ``raytroupe`` command, built explicitly: one table of commands, one error boundary.

:func:`build_app` makes the Typer app from :data:`COMMANDS`; the console script (:func:`main`)
and the tests call it alike, and importing a command module registers nothing. A command's
module is imported only when that command runs (or its own ``--help`` is asked for): the
commands pull in Ray, the anthropic SDK and the topologies, about 2 s of imports on 2 cores,
while ``raytroupe --help`` lists them from the table below in a fraction of that.

Errors are caught only here, in :class:`_Boundary`: a raytroupe error becomes one clear line
on stderr and exit code 2 (usage: fix the input) or 1 (the run failed); anything else is a bug
and keeps its traceback.

Example:
    >>> from typer.testing import CliRunner
    >>> CliRunner().invoke(build_app(), ["--help"]).exit_code
    0
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import typer
from typer import _click
from typer.core import TyperCommand, TyperGroup

from actors.errors import RaytroupeError, UsageError


@dataclass(frozen=True)
class CommandEntry:
    """Where a command lives and what ``raytroupe --help`` says of it."""

    module: str
    attribute: str
    """A function (one command) or a ``typer.Typer`` (a group of them)."""
    summary: str


COMMANDS: dict[str, CommandEntry] = {
    "run": CommandEntry("cluster.run_command", "run_app",
                        "Run an architecture on a prompt (offline on the emulator)."),
    "up": CommandEntry("cluster.up_command", "up",
                       "Start a long-lived local runtime that runs and jobs join."),
    "status": CommandEntry("cluster.status_command", "status",
                           "Show the runtime: singletons, limits, calls in flight, spend, jobs."),
    "down": CommandEntry("cluster.up_command", "down",
                         "Stop the runtime that `raytroupe up` started."),
    "limits": CommandEntry("cluster.limits_command", "limits_app",
                           "Show or change the runtime's rate limits, for every job."),
    "ledger": CommandEntry("cluster.ledger_command", "ledger_command",
                           "Show tokens, USD, calls, errors and latency from the Ledger."),
    "cache": CommandEntry("cluster.cache_command", "cache_app",
                          "Show or clear the response cache (entries, hit rate, USD saved)."),
    "emulator": CommandEntry("cluster.emulator_command", "emulator_command",
                             "Serve the Anthropic API emulator on HOST:PORT until Ctrl-C."),
    "demo": CommandEntry("cluster.demo_command", "demo",
                         "Start the local emulator and stream one reply through the SDK."),
    "report": CommandEntry("cluster.report_command", "report_command",
                           "A run's timeline, cost and latency from the Ledger (HTML, PNG)."),
    "compare": CommandEntry("cluster.compare_command", "compare_command",
                            "The same prompts through several configurations, side by side."),
    "loadtest": CommandEntry("cluster.loadtest_command", "loadtest_command",
                             "N concurrent users: latency, throughput, errors, cost, SLA."),
}
"""Every command: the only registration there is."""

_EXTRA_COMMANDS: dict[str, list[tuple[str, str, str]]] = {
    "run": [("mapreduce", "cluster.run_mapreduce_command", "mapreduce")],
}
"""Commands added to a group that lives in another module (name, module, function)."""


class _Boundary(TyperGroup):
    """The app's top group: loads a command's module on first use, and is the one place
    where raytroupe's errors become a line and an exit code."""

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        if getattr(ctx, "_raytroupe_listing", False):  # the top --help: no imports
            return TyperCommand(cmd_name, help=entry.summary)
        if cmd_name not in self.commands:
            self.commands[cmd_name] = _load(cmd_name, entry)
        return self.commands[cmd_name]

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        ctx._raytroupe_listing = True  # type: ignore[attr-defined]
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx._raytroupe_listing = False  # type: ignore[attr-defined]

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(2) from None
        except RaytroupeError as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(1) from None


def _load(name: str, entry: CommandEntry) -> _click.Command:
    """Import the command's module and make its click command."""
    target = getattr(importlib.import_module(entry.module), entry.attribute)
    if isinstance(target, typer.Typer):
        group = typer.Typer(name=name, help=entry.summary, no_args_is_help=True,
                            add_completion=False, pretty_exceptions_enable=False)
        for info in target.registered_commands:
            group.registered_commands.append(info)
        for sub, module, function in _EXTRA_COMMANDS.get(name, []):
            group.command(sub)(getattr(importlib.import_module(module), function))
        for info in target.registered_groups:
            group.registered_groups.append(info)
        return typer.main.get_command(group)
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name)(target)
    command = typer.main.get_command(single)
    command.name = name
    return command


def build_app() -> typer.Typer:
    """The ``raytroupe`` app with every command of :data:`COMMANDS` (imported on use)."""
    app = typer.Typer(name="raytroupe", cls=_Boundary, no_args_is_help=True,
                      pretty_exceptions_enable=False, add_completion=False)
    app.callback()(_root)
    return app


def _root() -> None:
    """An actor-model runtime for multi-agent Claude applications, built on Ray."""


def main() -> None:
    """Console-script entry point."""
    build_app()()
