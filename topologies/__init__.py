"""Topologies: typed channels, the session API, plugins and the architectures built on them.

Example:
    >>> import topologies
    >>> sorted(topologies.get_available_architectures())[:2]
    ['critic_actor', 'debate']
"""

from topologies.architecture import (
    AgentOverride,
    Architecture,
    ArchitectureConfig,
    RoleSpec,
    get_architecture,
    get_available_architectures,
)
from topologies.builtin_plugins import (
    CostTrackerPlugin,
    MetricsCollectorPlugin,
    RetryHandlerPlugin,
    SessionMetrics,
    ThrottlePlugin,
)
from topologies.channel import Channel, Delivery, fan_in, fan_out
from topologies.messages import ArchitectureResult, Event, Finding, Task
from topologies.plugins import Plugin, PluginContext
from topologies.run_context import RunContext
from topologies.session import Session, SessionRuntime, create_session, init
from topologies.throttle import SessionThrottle

__all__ = [
    "AgentOverride",
    "Architecture",
    "ArchitectureConfig",
    "ArchitectureResult",
    "Channel",
    "CostTrackerPlugin",
    "Delivery",
    "Event",
    "Finding",
    "MetricsCollectorPlugin",
    "Plugin",
    "PluginContext",
    "RetryHandlerPlugin",
    "RoleSpec",
    "RunContext",
    "Session",
    "SessionMetrics",
    "SessionRuntime",
    "SessionThrottle",
    "Task",
    "ThrottlePlugin",
    "create_session",
    "fan_in",
    "fan_out",
    "get_architecture",
    "get_available_architectures",
    "init",
]
