"""The runtime's record: later drivers adopt it, conflicts are said in one line, and limits
set for everyone survive a RateLimiter that Ray restarts."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import ray

from actors.limiter_lease import LimiterLease
from actors.limits import BucketKey, TierLimits
from actors.ratelimiter import get_rate_limiter
from cluster import runtime_info
from cluster.settings import Settings


def test_a_driver_adopts_the_runtime_and_is_told_what_it_asked_for(
        ray_session: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    namespace = f"info-{uuid.uuid4().hex[:6]}"
    first = Settings(_env_file=None, rpm=50, data_dir=tmp_path / "a")
    runtime_info.adopt(first, namespace)
    with caplog.at_level(logging.WARNING, logger="raytroupe"):
        quiet, _ = runtime_info.adopt(Settings(_env_file=None), namespace)
        assert not caplog.records  # asked for nothing: the runtime's values, silently
        asked, info = runtime_info.adopt(Settings(_env_file=None, rpm=7,
                                                  data_dir=tmp_path / "b"), namespace)
    assert quiet.rpm == asked.rpm == 50 == info.limits.rpm
    assert asked.data_dir == tmp_path / "a"
    [line] = [r.getMessage() for r in caplog.records]
    assert "rpm 50 (asked 7)" in line and f"data_dir {tmp_path / 'a'} (asked" in line
    assert "raytroupe limits set" in line


def test_another_version_is_named_in_one_line(
        ray_session: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    namespace = f"ver-{uuid.uuid4().hex[:6]}"
    old = runtime_info.RuntimeInfo.of(Settings(_env_file=None, data_dir=tmp_path), "up")
    runtime_info.write(namespace, old.model_copy(update={"version": "0.0.1"}), overwrite=True)
    with caplog.at_level(logging.WARNING, logger="raytroupe"):
        runtime_info.adopt(Settings(_env_file=None, data_dir=tmp_path), namespace)
    [line] = [r.getMessage() for r in caplog.records]
    assert f"raytroupe {runtime_info.raytroupe_version()}" in line and "is 0.0.1" in line


async def _opus_limits(limiter: object) -> TierLimits:
    """The limits the limiter applies to opus, seen on a bucket one reservation creates."""
    lease = LimiterLease(limiter)
    async with lease.reserve(BucketKey(account="a1b2c3", tier="opus"), input_tokens=1,
                             output_tokens=1) as permit:
        permit.settle(input_tokens=1, output_tokens=1)
    await lease.close()
    status = await limiter.status.remote()  # type: ignore[attr-defined]
    return next(b.limits for b in status.buckets if b.key.tier == "opus")


def test_limits_set_for_everyone_survive_a_limiter_restart(
        ray_session: None, tmp_path: Path) -> None:
    namespace = f"lim-{uuid.uuid4().hex[:6]}"
    info = runtime_info.write(namespace, runtime_info.RuntimeInfo.of(
        Settings(_env_file=None, data_dir=tmp_path), "up"), overwrite=True)
    defaults = info.limits
    limiter = get_rate_limiter(defaults, per_tier=runtime_info.RecordedLimits(namespace),
                               namespace=namespace, lifetime="detached")
    try:
        assert asyncio.run(_opus_limits(limiter)) == defaults
        chosen = defaults.model_copy(update={"rpm": 33})
        runtime_info.write(namespace, info.model_copy(update={"per_tier": {"opus": chosen}}),
                           overwrite=True)  # what `raytroupe limits set` records
        pid = ray.get(limiter.status.remote()).pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if ray.get(limiter.status.remote(), timeout=10).pid != pid:
                    break
            except ray.exceptions.RayActorError:
                time.sleep(0.2)
        assert asyncio.run(_opus_limits(limiter)) == chosen
    finally:
        ray.kill(limiter, no_restart=True)
