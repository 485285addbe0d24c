"""The base every architecture subclasses: its config, its roles, its prompts, its registry.

An architecture is a *description* (config, roles, prompts) plus one async ``execute`` that
wires agents for one run. Subclassing registers it by ``name``:

    class Echo(Architecture[EchoConfig, EchoResult]):
        name = "echo"
        description = "One agent answers."
        config_class = EchoConfig
        roles = (RoleSpec(name="speaker", default_tier="haiku", final=True),)

        async def execute(self, prompt: str, run: RunContext) -> EchoResult:
            finding = await run.ask("speaker", prompt, final=True)
            return run.result(EchoResult, output=finding.text)

Which model each agent gets, most specific first: ``agent_configs["researcher_1"]``, then
``agent_configs["researcher"]`` (the whole role), then the config's field for the role
(``ResearchConfig.subagent_model``), then the session's ``model=``, then the role's default
tier. A model is a tier name (``haiku``) or a model id of the price table.

Prompts are files: ``<prompts_dir or topologies/prompts/NAME>/<role>.md``, the role's system
prompt, with ``$variables`` (``string.Template``) filled from the run (``$question``...) and
``config.template_vars``; a variable without a value is a :class:`PromptTemplateError`.

An architecture whose input is not one prompt (map-reduce takes paths and a question)
overrides :meth:`Architecture.check_input`, and its ``execute`` takes what that returns.
"""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actors.errors import ConfigError
from actors.tiers import PriceTable, Tier, load_price_table
from topologies.errors import (
    EmptyInputError,
    PromptTemplateError,
    RoleCardinalityError,
    UnknownArchitecture,
)
from topologies.messages import ArchitectureResult

if TYPE_CHECKING:
    from topologies.plugins import Plugin
    from topologies.run_context import RunContext

PROMPTS_ROOT = Path(__file__).parent / "prompts"
_TIERS: tuple[Tier, ...] = ("haiku", "sonnet", "opus")
AUTO = "auto"
"""``agent_configs`` model value: route the agent's calls per request (issue 10)."""


class AgentOverride(BaseModel):
    """Per-agent (or per-role) settings: ``agent_configs={"researcher_1": {"model": "haiku"}}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    """A tier (``haiku``, ``sonnet``, ``opus``), a model id from the price table, or ``auto``:
    a router picks the tier per request (``actors/router.py``; the role's tier otherwise)."""
    max_tokens: int | None = Field(default=None, gt=0)
    """Output cap of this agent's calls."""


class ArchitectureConfig(BaseModel):
    """Fields every architecture's config has; subclasses add the guide's own fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_configs: dict[str, AgentOverride] = Field(default_factory=dict)
    """Overrides by agent key (``researcher_1``) or role (``researcher``)."""
    prompts_dir: Path | None = None
    """A folder of ``<role>.md`` files replacing the shipped prompts (missing ones fall back)."""
    template_vars: dict[str, str] = Field(default_factory=dict)
    """Extra ``$variables`` for the prompt files."""
    max_tokens: int = Field(default=1024, gt=0)
    """Default output cap of every call."""

    @field_validator("prompts_dir")
    @classmethod
    def _prompts_dir_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"prompts_dir {str(value)!r} is not a folder")
        return value


class RoleSpec(BaseModel):
    """One role of an architecture: how many agents play it and on which tier by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*[a-z]$|^[a-z]$")
    """Lower-case words joined by ``_``, not ending in a digit (``role_<i>`` keys are derived)."""
    description: str = ""
    min_count: int = Field(default=1, ge=0)
    max_count: int = Field(default=1, ge=1)
    default_tier: Tier = "haiku"
    config_field: str | None = None
    """The config field naming this role's model (``lead_model``), if any."""
    final: bool = False
    """Writes the run's final answer (its text is what ``session.run()`` streams)."""

    def key(self, index: int) -> str:
        """The agent key: the role itself when it has one agent, else ``role_<i>`` (1-based)."""
        return self.name if self.max_count == 1 else f"{self.name}_{index + 1}"


ConfigT = TypeVar("ConfigT", bound=ArchitectureConfig)
ResultT = TypeVar("ResultT", bound=ArchitectureResult)

_REGISTRY: dict[str, type[Architecture[Any, Any]]] = {}
_BUILTIN_MODULES = ("research", "pipeline", "mapreduce", "specialist_pool", "debate",
                    "critic_actor", "reflexion")


class Architecture(ABC, Generic[ConfigT, ResultT]):
    """A topology of agents: config, roles, prompts and the async ``execute`` of one run.

    Args:
        config: The config model, a dict of its fields, or None for defaults.
        model: Default model for roles the config does not set.
        agent_configs: Merged over ``config.agent_configs``.
        plugins: Lifecycle plugins (see :mod:`topologies.plugins`).
        price_table: A TOML merged over the shipped price table (models are checked in it).

    Raises:
        ConfigError: a config value, an agent key, a model or a role count is wrong.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type[ArchitectureConfig]] = ArchitectureConfig
    roles: tuple[RoleSpec, ...] = ()
    """The roles (a class default; an instance may derive its own in ``define_roles``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _REGISTRY[cls.name] = cls

    def __init__(self, config: ConfigT | Mapping[str, Any] | None = None, *,
                 model: str | None = None,
                 agent_configs: Mapping[str, Any] | None = None,
                 plugins: Sequence[Plugin] = (), price_table: str | Path | None = None) -> None:
        self.prices: PriceTable = load_price_table(price_table)
        self.config: ConfigT = self._validated(config, agent_configs)
        self.roles = self.define_roles()
        self.model = model
        if model is not None:
            self._resolve(model, "model=")
        self.plugins: list[Plugin] = list(plugins)
        self.counts = self.role_counts()
        self._check_counts()
        self._check_agent_configs()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.counts})"

    # -- what subclasses provide -------------------------------------------------------------

    @abstractmethod
    async def execute(self, task: Any, run: RunContext) -> ResultT:
        """Run the topology on ``task`` (what :meth:`check_input` returned) and return its result.

        Emit progress through ``run`` (``run.phase``, ``run.ask`` emits agent events itself).
        """

    def define_roles(self) -> tuple[RoleSpec, ...]:
        """The roles of this instance; override when they come from the config (stages)."""
        return type(self).roles

    def prompt_name(self, role: str) -> str:
        """The prompt file a role falls back to (roles made from config share one)."""
        return role

    def role_counts(self) -> dict[str, int]:
        """How many agents play each role in this config (default: each role's minimum)."""
        return {role.name: max(role.min_count, 1) for role in self.roles}

    def check_input(self, task: Any) -> Any:
        """Validate the run's input before anything is spawned; default: a non-empty prompt.

        Raises:
            EmptyInputError: the prompt is empty or blank.
        """
        if not isinstance(task, str):
            raise ConfigError(f"{self.name}: the input is a prompt string, got "
                              f"{type(task).__name__}")
        if not task.strip():
            raise EmptyInputError(f"{self.name}: the prompt is empty; say what to work on")
        return task.strip()

    # -- plugins -------------------------------------------------------------------------------

    def add_plugin(self, plugin: Plugin) -> None:
        """Attach a lifecycle plugin (hooks run in the order plugins were added)."""
        self.plugins.append(plugin)

    def remove_plugin(self, plugin: Plugin) -> None:
        """Detach a plugin added earlier."""
        self.plugins.remove(plugin)

    # -- agents, tiers and prompts -----------------------------------------------------------

    def role(self, name: str) -> RoleSpec:
        """The role called ``name``."""
        for role in self.roles:
            if role.name == name:
                return role
        raise ConfigError(f"{self.name}: no role {name!r}; roles are "
                          f"{', '.join(r.name for r in self.roles)}")

    def agent_keys(self, role: str) -> list[str]:
        """The keys of the agents playing ``role`` (``["researcher_1", "researcher_2"]``)."""
        spec = self.role(role)
        return [spec.key(i) for i in range(self.counts[role])]

    def role_of(self, key: str) -> RoleSpec:
        """The role an agent key belongs to."""
        for role in self.roles:
            if key == role.name or (key.startswith(role.name + "_") and
                                    key[len(role.name) + 1:].isdigit()):
                return role
        raise ConfigError(f"{self.name}: no agent or role {key!r}; agents are "
                          f"{', '.join(self.all_agent_keys())}")

    def all_agent_keys(self) -> list[str]:
        """Every agent key of this config, role by role."""
        return [key for role in self.roles for key in self.agent_keys(role.name)]

    def model_for(self, key: str) -> tuple[Tier, str]:
        """The (tier, model id) agent ``key`` runs on, after every override."""
        role = self.role_of(key)
        overrides = self.config.agent_configs
        for source in (key, role.name):
            choice = overrides.get(source)
            if choice is not None and choice.model not in (None, AUTO):
                return self._resolve(choice.model, f"agent_configs[{source!r}]")
        field_value = getattr(self.config, role.config_field, None) if role.config_field else None
        if field_value is not None:
            return self._resolve(field_value, role.config_field or role.name)
        if self.model is not None:
            return self._resolve(self.model, "model=")
        return self._resolve(role.default_tier, role.name)

    def routed(self, key: str) -> bool:
        """True when ``agent_configs`` sets agent ``key`` (or its role) to ``auto``."""
        for source in (key, self.role_of(key).name):
            choice = self.config.agent_configs.get(source)
            if choice is not None and choice.model is not None:
                return choice.model == AUTO
        return False

    def max_tokens_for(self, key: str, default: int | None = None) -> int:
        """Output cap for agent ``key``: its override, its role's, else ``default`` or config's."""
        role = self.role_of(key)
        for source in (key, role.name):
            choice = self.config.agent_configs.get(source)
            if choice is not None and choice.max_tokens is not None:
                return choice.max_tokens
        return default or self.config.max_tokens

    def prompt(self, role: str, **variables: Any) -> str:
        """The role's system prompt from its file, with ``$variables`` filled in.

        Raises:
            PromptTemplateError: no file for the role, or a variable without a value.
        """
        path = self._prompt_path(role)
        values = {**self.config.template_vars, **{k: str(v) for k, v in variables.items()}}
        try:
            return string.Template(path.read_text(encoding="utf-8")).substitute(values).strip()
        except KeyError as exc:
            raise PromptTemplateError(f"prompt {str(path)!r} uses ${exc.args[0]}, which has no "
                                      "value; add it to template_vars") from None
        except ValueError as exc:
            raise PromptTemplateError(f"prompt {str(path)!r}: {exc}; write $$ for a "
                                      "literal $") from None

    # -- checks at creation ------------------------------------------------------------------

    def _validated(self, config: Any, agent_configs: Mapping[str, Any] | None) -> ConfigT:
        cls = self.config_class
        try:
            if config is None:
                data: dict[str, Any] = {}
            elif isinstance(config, BaseModel):
                if not isinstance(config, cls):
                    raise ConfigError(f"{self.name} takes a {cls.__name__}, got "
                                      f"{type(config).__name__}")
                data = config.model_dump(exclude_unset=True)
            else:
                data = dict(config)
            if agent_configs:
                data["agent_configs"] = {**data.get("agent_configs", {}), **agent_configs}
            return cls.model_validate(data)  # type: ignore[return-value]
        except ValidationError as exc:
            raise ConfigError(_describe(self.name, cls, exc)) from None

    def _check_counts(self) -> None:
        for role in self.roles:
            count = self.counts.get(role.name, 0)
            if not role.min_count <= count <= role.max_count:
                raise RoleCardinalityError(self.name, role.name, count, role.min_count,
                                           role.max_count)

    def _check_agent_configs(self) -> None:
        known = [r.name for r in self.roles] + self.all_agent_keys()
        for key in self.config.agent_configs:
            if key not in known:
                raise ConfigError(f"{self.name}: agent_configs names {key!r}, which is no "
                                  f"agent or role here; choose from {', '.join(known)}")
        for key in self.all_agent_keys():
            self.model_for(key)

    def _resolve(self, model: str, where: str) -> tuple[Tier, str]:
        if model in _TIERS:
            return model, self.prices.model_for(model)  # type: ignore[return-value]
        try:
            return self.prices.tier_of(model), model
        except Exception:
            raise ConfigError(f"{self.name}: {where} is {model!r}, which is neither a tier "
                              f"({', '.join(_TIERS)}) nor a model of the price table") from None

    def _prompt_path(self, role: str) -> Path:
        folders = (self.config.prompts_dir, PROMPTS_ROOT / self.name)
        for folder in folders:
            for stem in dict.fromkeys((role, self.prompt_name(role))):
                if folder is not None and (folder / f"{stem}.md").is_file():
                    return folder / f"{stem}.md"
        raise PromptTemplateError(f"{self.name}: no prompt file for role {role!r} (looked for "
                                  f"{role}.md in prompts_dir and {PROMPTS_ROOT / self.name})")


def _describe(name: str, cls: type[BaseModel], exc: ValidationError) -> str:
    """One line per bad field: ``research: ResearchConfig.max_parallel_agents = 0: ...``."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "(config)"
        parts.append(f"{cls.__name__}.{field} = {error.get('input')!r}: {error['msg']}")
    return f"{name}: bad config: " + "; ".join(parts)


def get_architecture(name: str) -> type[Architecture[Any, Any]]:
    """The architecture class registered as ``name``.

    Raises:
        UnknownArchitecture: no such name (the message lists the available ones).
    """
    _import_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitecture(name, _REGISTRY) from None


def get_available_architectures() -> dict[str, str]:
    """Every registered architecture's name and one-line description, by name.

    Example:
        >>> "research" in get_available_architectures()
        True
    """
    _import_builtins()
    return {name: _REGISTRY[name].description for name in sorted(_REGISTRY)}


def _import_builtins() -> None:
    """Import the shipped architecture modules so that they register themselves."""
    import importlib

    for module in _BUILTIN_MODULES:
        importlib.import_module(f"topologies.{module}")
