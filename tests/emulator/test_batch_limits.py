"""The batch API's own limits, through the real SDK: endpoint RPM and the processing queue."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic import Anthropic

from emulator import run_emulator
from emulator.batch_limits import BatchLimits


def _requests(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "params": {
        "model": "claude-haiku-5-5", "max_tokens": 20,
        "messages": [{"role": "user", "content": f"Question {i}"}]}} for i in range(n)]


def test_batch_endpoints_have_their_own_requests_per_minute() -> None:
    with run_emulator(batch_limits=BatchLimits(rpm=2), latency_s=0.0) as emu, \
            Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as client:
        batch = client.messages.batches.create(requests=_requests(1))  # type: ignore[arg-type]
        client.messages.batches.retrieve(batch.id)
        with pytest.raises(anthropic.RateLimitError, match="batch API requests per minute") as exc:
            client.messages.batches.retrieve(batch.id)
        assert int(exc.value.response.headers["retry-after"]) >= 1
        # The Messages limits are apart: a plain call still goes through.
        client.messages.create(model="claude-haiku-5-5", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
        assert emu.stats()["batches"]["rate_limited"] == 1


def test_a_batch_over_the_processing_queue_is_refused_whole() -> None:
    with run_emulator(batch_limits=BatchLimits(max_queued_requests=5), batch_delay_s=30.0,
                      latency_s=0.0) as emu, \
            Anthropic(base_url=emu.base_url, api_key=emu.api_key, max_retries=0) as client:
        client.messages.batches.create(requests=_requests(3))  # type: ignore[arg-type]
        with pytest.raises(anthropic.RateLimitError, match="processing queue"):
            client.messages.batches.create(requests=_requests(3))  # type: ignore[arg-type]
        assert emu.stats()["batches"]["created"] == 1
