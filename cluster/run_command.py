"""``raytroupe run <architecture> PROMPT [options]``: one subcommand per architecture.

Each subcommand maps its options onto the architecture's config (the guide's field names),
then :func:`run_architecture` starts or joins Ray, runs a session with live progress, prints
the answer and the Ledger's tables per agent and tier. Offline (no ``ANTHROPIC_API_KEY``) it
runs on the emulator. Bad input is one line on stderr: exit 2 for a usage error (unknown
architecture, bad value, empty prompt, budget too small for one call), 1 for a failed run.

Example:
    raytroupe run research "How do actor runtimes schedule work?" \\
        --lead sonnet --subagent haiku --max-parallel 4 --budget 2.00
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from actors.errors import ConfigError
from cluster.run_display import RunProgress, print_ledger, print_result

run_app = typer.Typer(name="run", no_args_is_help=True,
                      help="Run an architecture on a prompt (offline on the emulator).")

Prompt = Annotated[str, typer.Argument(help="What to work on.")]
Model = Annotated[str | None, typer.Option(
    "--model", help="Default tier or model id for roles not set otherwise.")]
Agents = Annotated[list[str] | None, typer.Option(
    "--agent", help="Per-agent or per-role model, NAME=MODEL (repeatable): researcher_1=opus.")]
Budget = Annotated[str | None, typer.Option("--budget", help="USD cap of the run, e.g. 2.00.")]
Address = Annotated[str | None, typer.Option(
    "--address", help="Ray address: HOST:PORT or 'auto' joins a running cluster, 'local' starts "
    "a private Ray; default: the runtime that `raytroupe up` keeps, else a private Ray.")]
ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="JSON file of config fields (options given here win).")]
Stream = Annotated[bool, typer.Option(
    "--stream", help="Print the final agent's text as it arrives (no progress bar).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or Ledger tables.")]
Json = Annotated[bool, typer.Option(
    "--json", help="Print the whole typed result as JSON on stdout (no tables): for scripts.")]
Report = Annotated[Path | None, typer.Option(
    "--report", help="At the end, write the run's report (timeline, cost, latency) to this "
    ".html or .png file, as `raytroupe report RUN --html/--png` would.")]


def _role_model(role: str, default: str, whose: str | None = None) -> Any:
    """A ``--<role>`` option: that role's tier or model id, with its default in the help."""
    whose = whose or f"{role}'s"
    return typer.Option(f"--{role}", help=f"The {whose} tier or model id. Default: {default}.")


def run_architecture(name: str, task: Any, config: dict[str, Any], *, model: str | None,
                     agents: list[str] | None, budget: str | None, address: str | None,
                     config_file: Path | None = None, stream: bool = False,
                     quiet: bool = False, unit: str = "calls", as_json: bool = False,
                     report: Path | None = None, role: str | None = None) -> Any:
    """Build, run and report one session of architecture ``name`` (what every subcommand does).

    ``role`` makes the progress bar count that role's calls only (``mapper``: chunks).
    Returns the typed result. Raises our errors for the CLI's error boundary to report.
    """
    import ray

    import cluster
    from cluster.ray_messages import send_ray_messages_to_stderr
    from cluster.settings import Settings
    from topologies import create_session, get_architecture

    options = {**_config_file(config_file), **{k: v for k, v in config.items() if v is not None}}
    settings = Settings()
    # Everything is checked before Ray starts: the name, every value, every model, the input.
    architecture = get_architecture(name)(options, model=model,
                                          agent_configs=_agent_overrides(agents or []),
                                          price_table=settings.price_table)
    architecture.check_input(task)
    if report is not None:
        from cluster.report_command import check_output

        check_output(report, "--report", (".html", ".htm", ".png"))
    # A private Ray lives as long as this run: no one opens its dashboard, which costs ten
    # processes and ~0.6 s of a cold start on 2 cores (`raytroupe up` keeps one that has it),
    # and its agents share one Agent host (`docs/performance.md`, "Start-up").
    send_ray_messages_to_stderr()
    runtime = cluster.init(address=address, settings=settings, include_dashboard=False,
                           host_agents=True)
    try:
        session = create_session(architecture, runtime=runtime, budget_usd=budget)
        result = asyncio.run(_drive(session, task, stream=stream, quiet=quiet or as_json,
                                    unit=unit, as_json=as_json, role=role))
        # The cluster's Ledger may have been created with another data dir than ours.
        journal = Path(ray.get(runtime.ledger.journal_path.remote())) if report else None
    finally:
        cluster.shutdown()
    if report is not None and journal is not None:
        from cluster.report_command import write_report

        write_report(journal, result.run_id, report)
        if not as_json:
            Console(stderr=True).print(f"report: {report}", highlight=False)
    return result


async def _drive(session: Any, task: Any, *, stream: bool, quiet: bool, unit: str,
                 as_json: bool = False, role: str | None = None) -> Any:
    out, err = Console(), Console(stderr=True)
    result, streamed = None, False
    async with session:
        with RunProgress(err, session.architecture.name, unit,
                         enabled=not (stream or quiet), role=role) as progress:
            async for event in session.run(task):
                progress.on_event(event)
                if stream and not as_json and event.kind == "text":
                    streamed = True
                    out.print(event.text, end="", markup=False, highlight=False)
                if event.kind == "run_completed":
                    result = event.result
        if as_json:
            print(result.model_dump_json(indent=2))
        elif streamed:
            out.print()
        else:  # nothing streamed (--stream off, or several pipeline items): print it whole
            print_result(out, result)
        if not quiet:
            print_ledger(out, await session.ledger_rollup("agent"),
                         await session.ledger_rollup("tier"))
    return result


def _agent_overrides(pairs: list[str]) -> dict[str, dict[str, str]]:
    overrides = {}
    for pair in pairs:
        name, sep, model = pair.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise ConfigError(f"--agent takes NAME=MODEL (researcher_1=haiku), got {pair!r}")
        overrides[name.strip()] = {"model": model.strip()}
    return overrides


def _config_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--config {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {str(path)!r} must hold a JSON object of config fields")
    return data


def _money(value: str | None) -> str | None:
    """Validate ``--budget`` early, so a typo fails before Ray starts, naming the flag as typed
    (``NaN`` and ``inf`` parse as decimals, and used to fail in the Ledger, after Ray)."""
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except ArithmeticError:
        raise ConfigError(f"--budget {value!r} is not a number of dollars") from None
    if not amount.is_finite() or amount <= 0:
        raise ConfigError(f"--budget {value!r} must be a number of dollars above 0, e.g. 2.00")
    return value


@run_app.command("research")
def research(prompt: Prompt, lead: Annotated[str | None, typer.Option(
                 "--lead", help="The lead's (and synthesizer's) model. Default: sonnet.")] = None,
             subagent: Annotated[str | None, typer.Option(
                 "--subagent", help="The researchers' model. Default: haiku.")] = None,
             max_parallel: Annotated[int | None, typer.Option(
                 "--max-parallel", help="Researchers working at once. Default: 4.")] = None,
             model: Model = None, agent: Agents = None, budget: Budget = None,
             address: Address = None, config: ConfigFile = None, stream: Stream = False,
             quiet: Quiet = False, json_out: Json = False, report: Report = None) -> None:
    """A lead splits the question; researchers dig in parallel; a synthesizer answers."""
    run_architecture("research", prompt, {"lead_model": lead, "subagent_model": subagent,
                                          "max_parallel_agents": max_parallel},
                     model=model, agents=agent, budget=_money(budget), address=address,
                     config_file=config, stream=stream, quiet=quiet, as_json=json_out,
                     report=report)


@run_app.command("pipeline")
def pipeline(prompts: Annotated[list[str], typer.Argument(
                 help="One prompt, or several: each flows through every stage.")],
             stage: Annotated[list[str] | None, typer.Option(
                 "--stage", help="A stage name, in order (repeatable). Default: "
                 "analyze, draft, review.")] = None,
             max_in_flight: Annotated[int | None, typer.Option(
                 "--max-in-flight", help="Items in the pipeline at once. Default: 8.")] = None,
             model: Model = None, agent: Agents = None, budget: Budget = None,
             address: Address = None, config: ConfigFile = None, stream: Stream = False,
             quiet: Quiet = False, json_out: Json = False, report: Report = None) -> None:
    """Ordered stages, one agent each; several prompts flow through them concurrently."""
    run_architecture("pipeline", prompts, {"stages": stage or None,
                                           "max_items_in_flight": max_in_flight},
                     model=model, agents=agent, budget=_money(budget), address=address,
                     config_file=config, stream=stream, quiet=quiet, as_json=json_out,
                     report=report)


@run_app.command("specialist_pool")
def specialist_pool(prompt: Prompt, max_specialists: Annotated[int | None, typer.Option(
                        "--max-specialists", help="At most this many answer (1-4).")] = None,
                    router: Annotated[str | None, _role_model("router", "haiku")] = None,
                    specialist: Annotated[str | None, _role_model(
                        "specialist", "haiku", "specialists'")] = None,
                    aggregator: Annotated[str | None, _role_model("aggregator", "sonnet")] = None,
                    model: Model = None, agent: Agents = None, budget: Budget = None,
                    address: Address = None, config: ConfigFile = None,
                    stream: Stream = False, quiet: Quiet = False, json_out: Json = False,
                    report: Report = None) -> None:
    """A router picks 1-4 specialists; they answer in parallel; an aggregator merges."""
    run_architecture("specialist_pool", prompt, {
        "max_specialists": max_specialists, "router_model": router,
        "specialist_model": specialist, "aggregator_model": aggregator},
        model=model, agents=agent, budget=_money(budget), address=address,
        config_file=config, stream=stream, quiet=quiet, as_json=json_out,
                     report=report)


@run_app.command("debate")
def debate(prompt: Prompt, rounds: Annotated[int | None, typer.Option(
               "--rounds", help="Exchanges before the verdict. Default: 2.")] = None,
           debater: Annotated[str | None, _role_model(
               "debater", "haiku", "proponent's and opponent's")] = None,
           judge: Annotated[str | None, _role_model("judge", "sonnet")] = None,
           model: Model = None, agent: Agents = None, budget: Budget = None,
           address: Address = None, config: ConfigFile = None, stream: Stream = False,
           quiet: Quiet = False, json_out: Json = False, report: Report = None) -> None:
    """A proponent and an opponent argue for N rounds; a judge decides."""
    run_architecture("debate", prompt, {"rounds": rounds, "debater_model": debater,
                                        "judge_model": judge},
                     model=model, agents=agent, budget=_money(budget), address=address,
                     config_file=config, stream=stream, quiet=quiet, as_json=json_out,
                     report=report)


@run_app.command("critic_actor")
def critic_actor(prompt: Prompt, max_rounds: Annotated[int | None, typer.Option(
                     "--max-rounds", help="Drafts at most. Default: 3.")] = None,
                 threshold: Annotated[int | None, typer.Option(
                     "--threshold", help="Score (0-10) that accepts a draft. Default: 8.")] = None,
                 actor: Annotated[str | None, _role_model("actor", "haiku")] = None,
                 critic: Annotated[str | None, _role_model("critic", "sonnet")] = None,
                 model: Model = None, agent: Agents = None, budget: Budget = None,
                 address: Address = None, config: ConfigFile = None, stream: Stream = False,
                 quiet: Quiet = False, json_out: Json = False, report: Report = None) -> None:
    """An actor drafts; a critic scores and comments; repeat until good enough."""
    run_architecture("critic_actor", prompt, {
        "max_rounds": max_rounds, "score_threshold": threshold, "actor_model": actor,
        "critic_model": critic},
        model=model, agents=agent, budget=_money(budget), address=address,
        config_file=config, stream=stream, quiet=quiet, as_json=json_out,
                     report=report)


@run_app.command("reflexion")
def reflexion(prompt: Prompt, max_attempts: Annotated[int | None, typer.Option(
                  "--max-attempts", help="Tries at most. Default: 3.")] = None,
              executor: Annotated[str | None, _role_model("executor", "haiku")] = None,
              reflector: Annotated[str | None, _role_model("reflector", "sonnet")] = None,
              model: Model = None, agent: Agents = None, budget: Budget = None,
              address: Address = None, config: ConfigFile = None, stream: Stream = False,
              quiet: Quiet = False, json_out: Json = False, report: Report = None) -> None:
    """An executor tries; a reflector writes lessons; it retries with them."""
    run_architecture("reflexion", prompt, {
        "max_attempts": max_attempts, "executor_model": executor,
        "reflector_model": reflector},
        model=model, agents=agent, budget=_money(budget), address=address,
        config_file=config, stream=stream, quiet=quiet, as_json=json_out,
                     report=report)
