"""The rate-limit book on a fake clock: buckets, refusals, refunds, headers."""

from __future__ import annotations

import pytest

from emulator.ratelimits import Admission, Limits, RateLimitBook
from tests.fake_clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_book(clock: FakeClock, **limits: int) -> RateLimitBook:
    return RateLimitBook(lambda model_class: Limits(**limits), clock=clock,
                         wall_clock=clock.wall)


def admit(book: RateLimitBook, *, input_tokens: int = 0, max_tokens: int = 0,
          key: str = "k1", model_class: str = "sonnet") -> Admission:
    return book.admit(key=key, model_class=model_class, input_tokens=input_tokens,
                      max_tokens=max_tokens)


def test_rpm_refuses_the_request_after_the_limit_and_refills_continuously(
        clock: FakeClock) -> None:
    book = make_book(clock, rpm=60)
    assert all(admit(book).ok for _ in range(60))
    refused = admit(book)
    assert not refused.ok
    assert refused.limit_kind == "requests"
    assert refused.retry_after_s == pytest.approx(1.0)  # 60 RPM refills one per second
    assert "of 60 requests per minute" in refused.message
    clock.advance(refused.retry_after_s or 0)
    assert admit(book).ok
    assert not admit(book).ok


def test_refusal_takes_nothing_from_any_bucket(clock: FakeClock) -> None:
    book = make_book(clock, rpm=10, itpm=1000, otpm=1000)
    assert admit(book, input_tokens=900, max_tokens=100).ok
    refused = admit(book, input_tokens=200, max_tokens=100)
    assert (refused.ok, refused.limit_kind) == (False, "input_tokens")
    # The output and request buckets were left alone, so a request that fits still passes.
    assert admit(book, input_tokens=100, max_tokens=900).ok


def test_retry_after_is_the_time_the_binding_deficit_needs_to_refill(clock: FakeClock) -> None:
    book = make_book(clock, itpm=6000, otpm=600)
    assert admit(book, input_tokens=6000, max_tokens=600).ok
    # Input short by 3000 (30 s at 100/s), output short by 300 (30 s at 10/s) + 60 more.
    refused = admit(book, input_tokens=3000, max_tokens=360)
    assert refused.limit_kind == "output_tokens"
    assert refused.retry_after_s == pytest.approx(36.0)
    clock.advance(35.9)
    assert not admit(book, input_tokens=3000, max_tokens=360).ok
    clock.advance(0.1)
    assert admit(book, input_tokens=3000, max_tokens=360).ok


def test_message_uses_the_api_wording(clock: FakeClock) -> None:
    book = make_book(clock, itpm=50_000)
    assert admit(book, input_tokens=50_000).ok
    refused = admit(book, input_tokens=1)
    assert refused.message.startswith(
        "This request would exceed the rate limit for your organization of 50,000 input "
        "tokens per minute.")
    assert "try again later" in refused.message


def test_a_request_larger_than_the_limit_can_never_pass(clock: FakeClock) -> None:
    book = make_book(clock, otpm=8000)
    refused = admit(book, max_tokens=8001)
    assert (refused.ok, refused.limit_kind, refused.retry_after_s) == (
        False, "output_tokens", None)
    assert "8,000 output tokens per minute" in refused.message
    assert "8,001" in refused.message
    assert "retry-after" not in refused.headers()
    clock.advance(3600)
    assert not admit(book, max_tokens=8001).ok
    assert admit(book, max_tokens=8000).ok  # a full minute's allowance is fine


def test_settle_refunds_unused_output_and_is_idempotent(clock: FakeClock) -> None:
    book = make_book(clock, otpm=1000)
    first = admit(book, max_tokens=1000)
    assert not admit(book, max_tokens=400).ok
    first.settle(output_tokens=600)  # 400 unused go back
    first.settle(output_tokens=0)  # a second settle changes nothing
    assert admit(book, max_tokens=400).ok
    assert not admit(book, max_tokens=1).ok


def test_settle_of_a_refusal_gives_nothing_back(clock: FakeClock) -> None:
    book = make_book(clock, otpm=1000, max_concurrency=1)
    held = admit(book, max_tokens=1000)
    refused = admit(book, max_tokens=500)
    refused.settle(output_tokens=0)
    assert not admit(book, max_tokens=500).ok
    assert held.ok


def test_refunds_never_exceed_capacity(clock: FakeClock) -> None:
    book = make_book(clock, otpm=1000)
    first = admit(book, max_tokens=500)
    clock.advance(60)  # the bucket refilled completely meanwhile
    first.settle(output_tokens=0)
    assert admit(book, max_tokens=1000).ok
    assert not admit(book, max_tokens=1).ok


def test_concurrency_cap_frees_a_slot_when_settled(clock: FakeClock) -> None:
    book = make_book(clock, max_concurrency=2)
    a, b = admit(book), admit(book)
    refused = admit(book)
    assert (refused.ok, refused.limit_kind, refused.retry_after_s) == (
        False, "concurrency", None)
    a.settle(output_tokens=1)
    a.settle(output_tokens=1)  # idempotent: still only one slot freed
    assert admit(book).ok
    assert not admit(book).ok
    assert b.ok


def test_lanes_are_separate_per_key_and_model_class(clock: FakeClock) -> None:
    book = make_book(clock, rpm=1)
    assert admit(book, key="k1", model_class="sonnet").ok
    assert not admit(book, key="k1", model_class="sonnet").ok
    assert admit(book, key="k2", model_class="sonnet").ok
    assert admit(book, key="k1", model_class="haiku").ok


def test_limits_are_read_per_model_class_and_changes_apply_at_once(clock: FakeClock) -> None:
    limits = {"haiku": Limits(rpm=2), "sonnet": Limits(rpm=1)}
    book = RateLimitBook(limits.__getitem__, clock=clock)
    assert admit(book, model_class="sonnet").ok
    assert not admit(book, model_class="sonnet").ok
    limits["sonnet"] = Limits(rpm=3)  # the used request stays used: 2 of 3 left
    assert admit(book, model_class="sonnet").ok
    assert admit(book, model_class="sonnet").ok
    assert not admit(book, model_class="sonnet").ok
    assert admit(book, model_class="haiku").ok


def test_unlimited_admits_everything_and_sends_no_headers(clock: FakeClock) -> None:
    book = make_book(clock)
    admission = admit(book, input_tokens=10**9, max_tokens=10**9)
    assert admission.ok
    assert admission.headers() == {}


def test_reset_refills_everything(clock: FakeClock) -> None:
    book = make_book(clock, rpm=1)
    old = admit(book)
    assert not admit(book).ok
    book.reset()
    assert admit(book).ok
    old.settle(output_tokens=0)  # an admission from before the reset is harmless
    assert not admit(book).ok


def test_headers_report_levels_rounding_and_full_again_time(clock: FakeClock) -> None:
    book = make_book(clock, rpm=1000, itpm=80_000, otpm=16_000)
    admission = admit(book, input_tokens=1_600, max_tokens=4_000)
    headers = admission.headers()
    assert headers == {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        # 1 request at 1000/60 per s is back in 0.06 s: the next whole second.
        "anthropic-ratelimit-requests-reset": "2026-11-27T12:00:01Z",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "78000",  # 78,400 to the nearest 1000
        "anthropic-ratelimit-input-tokens-reset": "2026-11-27T12:00:02Z",  # 1.2 s
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "12000",
        "anthropic-ratelimit-output-tokens-reset": "2026-11-27T12:00:15Z",  # exactly 15 s
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "90000",
        "anthropic-ratelimit-tokens-reset": "2026-11-27T12:00:02Z",
    }


def test_headers_follow_the_live_levels(clock: FakeClock) -> None:
    book = make_book(clock, otpm=6000)
    admission = admit(book, max_tokens=6000)
    assert admission.headers()["anthropic-ratelimit-output-tokens-remaining"] == "0"
    admission.settle(output_tokens=2500)
    assert admission.headers()["anthropic-ratelimit-output-tokens-remaining"] == "4000"  # 3500
    clock.advance(30)
    assert admission.headers()["anthropic-ratelimit-output-tokens-remaining"] == "6000"


def test_refusal_headers_carry_retry_after_in_whole_seconds_and_ms(clock: FakeClock) -> None:
    book = make_book(clock, rpm=50, itpm=30_000)
    assert admit(book, input_tokens=30_000).ok
    refused = admit(book, input_tokens=1_000)
    headers = refused.headers()
    assert refused.retry_after_s == pytest.approx(2.0)
    assert headers["retry-after"] == "2"
    assert headers["retry-after-ms"] == "2000"
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert "anthropic-ratelimit-output-tokens-limit" not in headers  # OTPM unlimited
    assert headers["anthropic-ratelimit-tokens-limit"] == "30000"


def test_retry_after_rounds_up_to_a_whole_second(clock: FakeClock) -> None:
    book = make_book(clock, rpm=600)
    for _ in range(600):
        assert admit(book).ok
    headers = admit(book).headers()
    assert headers["retry-after"] == "1"  # 0.1 s rounds up
    assert headers["retry-after-ms"] == "100"


def test_snapshot_shows_levels_but_never_the_key(clock: FakeClock) -> None:
    book = make_book(clock, rpm=10, max_concurrency=4)
    admit(book, key="sk-secret-key")
    snapshot = book.snapshot()
    assert "sk-secret-key" not in repr(snapshot)
    (lane,) = snapshot.values()
    assert lane["requests"] == {"limit": 10, "remaining": 9.0}
    assert lane["in_flight"] == 1
