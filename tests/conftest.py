"""Shared fixtures: a clean environment, one real Ray per session, a real loopback emulator.

Ray is never mocked: ``ray_session`` starts it once for the whole run (about 2 s) and every
test that needs Ray asks for it. Multi-node tests build their own ``ray.cluster_utils.Cluster``
in their module (they must run after ``ray_session`` is shut down, so they live in a module
that requests ``ray_cluster`` instead).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# Set before Ray is imported anywhere: no token auth (a consistent mode for CLI and drivers),
# actor output not collapsed, no usage reporting.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Under pytest-xdist each worker is a Ray user of its own: its own Ray temp root, so one
# worker's `raytroupe up` (found through Ray's current-cluster file there) is never joined by a
# run of another worker that expects a private Ray.
if _worker := os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["RAY_TMPDIR"] = f"{os.environ.get('RAY_TMPDIR', '/tmp/ray')}-{_worker}"  # nosec B108

_SECRET_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the real API: keys, base URLs and proxies are cleared."""
    for name in _SECRET_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("RAYTROUPE_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole test run: 2 CPUs, a small object store, the dashboard on.

    The dashboard (about 0.6 s and 200 MB more) serves the State API that the leak and naming
    tests read; metrics are reported every second instead of ten so metric tests stay short.
    """
    import ray

    if not ray.is_initialized():
        # address="local": always a fresh Ray, even if a `ray start` cluster is up.
        ray.init(address="local", num_cpus=2, include_dashboard=True,
                 object_store_memory=300 * 1024 * 1024,
                 namespace="raytroupe-tests", log_to_driver=True,
                 _system_config={"metrics_report_interval_ms": 1000})
    yield
    ray.shutdown()


@pytest.fixture
def emulator() -> Iterator[object]:
    """A fresh emulator on a free loopback port, fast profile, no limits that bind."""
    from emulator import run_emulator

    with run_emulator() as emu:
        yield emu
