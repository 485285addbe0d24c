"""A/B comparison: the same prompts through several configurations, side by side.

The guide's A/B test and cost-latency matrix as code. A configuration is a preset
(``all-haiku``, ``mixed``, ``all-sonnet``, ``all-opus``) or a TOML file::

    name = "optimized"            # default: the file name
    architecture = "research"     # default: --arch
    model = "haiku"               # default tier or model for roles not set below
    [config]                      # the architecture's config fields
    lead_model = "sonnet"
    [agents]                      # per-agent or per-role model
    researcher_1 = "opus"

Each configuration gets one session; its prompts run one after another, so a query's latency
is its own. The first prompt is sent once before the clock starts (it spawns the agents) and
is neither timed nor billed to the figures. Quality is a user function
``score(prompt, answer) -> float``, or else the answer's agreement with the reference
configuration's answer to the same prompt (word overlap, Jaccard: crude, but it needs no
model and says when a cheaper configuration drifts away).

Example:
    >>> configs = [load_config("all-haiku", "research"), load_config("mixed", "research")]
    >>> configs[0].model, configs[1].model
    ('haiku', None)
    >>> rows = await compare(configs, ["q1", "q2"], runtime)              # doctest: +SKIP
    >>> [row.name for row in rows if row.best]                            # doctest: +SKIP
    ['all-haiku']
"""

from __future__ import annotations

import importlib
import re
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.errors import ConfigError
from actors.ledger_rollup import percentile

PRESETS: dict[str, dict[str, Any]] = {
    "all-haiku": {"model": "haiku"},
    "mixed": {},
    "all-sonnet": {"model": "sonnet"},
    "all-opus": {"model": "opus"},
}
"""``mixed`` keeps each architecture's own defaults: a strong lead, cheap workers."""

Scorer = Callable[[str, str], float]
_WORD = re.compile(r"[a-z0-9']+")


class CompareConfig(BaseModel):
    """One configuration under test."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    architecture: str = "research"
    model: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    agents: dict[str, str] = Field(default_factory=dict)


class CompareRow(BaseModel):
    """One configuration's figures over every prompt."""

    model_config = ConfigDict(frozen=True)

    name: str
    architecture: str
    prompts: int
    p50_s: float | None
    p95_s: float | None
    cost_usd: Decimal
    """Over every counted prompt (the warm-up query left out)."""
    tokens: int
    quality: float
    """Mean score over the prompts (0..1 for agreement; the user's scale with --score)."""
    quality_per_usd: float | None
    """``quality / cost_usd``; None when nothing was billed."""
    best: bool = False


def load_config(spec: str, architecture: str) -> CompareConfig:
    """A preset name or a TOML file.

    Raises:
        ConfigError: neither a preset nor a readable, valid TOML file.
    """
    if spec in PRESETS:
        return CompareConfig(name=spec, architecture=architecture, **PRESETS[spec])
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a "
                          "TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return CompareConfig(**{"name": path.stem, "architecture": architecture, **data})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config {spec!r}: {exc}") from None
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"config {spec!r}: {where}: {error['msg']}") from None


def load_prompts(path: Path) -> list[str]:
    """One prompt per line; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prompts {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") \
            from None
    prompts = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not prompts:
        raise ConfigError(f"--prompts {str(path)!r} holds no prompt (one per line)")
    return prompts


def load_scorer(spec: str) -> Scorer:
    """``package.module:function`` (the current folder is importable), checked now."""
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"--score {spec!r}: give MODULE:FUNCTION, e.g. myscores:quality")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--score {spec!r}: {exc}") from None
    if not callable(func):
        raise ConfigError(f"--score {spec!r} is not a function")
    return func


def agreement(answer: str, reference: str) -> float:
    """Word-set overlap (Jaccard) of two answers, 0..1.

    Example:
        >>> agreement("the river rose", "the river fell")
        0.5
    """
    a, b = set(_WORD.findall(answer.lower())), set(_WORD.findall(reference.lower()))
    return len(a & b) / len(a | b) if a | b else 1.0


async def run_config(config: CompareConfig, prompts: Sequence[str], runtime: Any,
                     warmup: bool = True) -> tuple[list[str], list[float], Decimal, int]:
    """Every prompt through one session of ``config``: answers, latencies, cost, tokens."""
    from topologies import create_session

    session = create_session(config.architecture, model=config.model, config=config.config,
                             agent_configs={k: {"model": v} for k, v in config.agents.items()},
                             runtime=runtime)
    answers, latencies, cost, tokens = [], [], Decimal(0), 0
    async with session:
        if warmup:
            await session.query(prompts[0])
        for prompt in prompts:
            sent = time.monotonic()
            result = await session.query(prompt)
            latencies.append(time.monotonic() - sent)
            answers.append(result.output)
            cost += result.cost_usd
            tokens += result.usage.total_input_tokens + result.usage.output_tokens
    return answers, latencies, cost, tokens


async def compare(configs: Sequence[CompareConfig], prompts: Sequence[str], runtime: Any, *,
                  scorer: Scorer | None = None, reference: str | None = None,
                  warmup: bool = True,
                  on_done: Callable[[str], None] | None = None) -> list[CompareRow]:
    """Run every configuration (one after another) and score it; mark the best per dollar."""
    runs = {}
    for config in configs:
        runs[config.name] = await run_config(config, prompts, runtime, warmup)
        if on_done is not None:
            on_done(config.name)
    reference_answers = runs[reference or configs[0].name][0]
    rows = []
    for config in configs:
        answers, latencies, cost, tokens = runs[config.name]
        scores = [scorer(p, a) if scorer else agreement(a, r)
                  for p, a, r in zip(prompts, answers, reference_answers, strict=True)]
        quality = sum(scores) / len(scores)
        ordered = sorted(latencies)
        rows.append(CompareRow(
            name=config.name, architecture=config.architecture, prompts=len(prompts),
            p50_s=percentile(ordered, 50), p95_s=percentile(ordered, 95), cost_usd=cost,
            tokens=tokens, quality=quality,
            quality_per_usd=quality / float(cost) if cost > 0 else None))
    return mark_best(rows)


def mark_best(rows: list[CompareRow]) -> list[CompareRow]:
    """Flag the row with the most quality per dollar (ties: the cheaper one)."""
    priced = [r for r in rows if r.quality_per_usd is not None]
    if not priced:
        return rows
    winner = max(priced, key=lambda r: (r.quality_per_usd, -r.cost_usd))
    return [r.model_copy(update={"best": r is winner}) for r in rows]
