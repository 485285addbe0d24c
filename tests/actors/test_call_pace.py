"""When holding asks and replies for company pays (``actors/call_pace.py``): only while the
calls one sees are fast (a CPU-bound host), never while they wait on a slow API."""

from __future__ import annotations

from actors.call_pace import FAST_CALL_S, HOLD_S, SLOW_HOLD_SHARE, CallPace


def test_nothing_is_held_before_a_reply_was_seen() -> None:
    assert CallPace().hold_s == 0.0


def test_fast_replies_hold_long_and_slow_ones_a_small_share_of_their_latency() -> None:
    pace = CallPace()
    for _ in range(5):
        pace.saw(0.010)  # latency 0 at 50 in flight: the host's CPU is the wait
    assert pace.hold_s == HOLD_S
    for _ in range(60):
        pace.saw(0.200)  # the API's 200 ms: the host is idle, a hold only delays
    assert not pace.fast
    assert abs(pace.hold_s - SLOW_HOLD_SHARE * 0.200) < 0.001


def test_a_slow_api_never_gets_more_than_the_fast_hold() -> None:
    pace = CallPace()
    pace.saw(5.0)  # a long answer from a real API: 2 % would be 100 ms
    assert pace.hold_s == HOLD_S


def test_one_slow_reply_among_fast_ones_does_not_flip_the_pace() -> None:
    pace = CallPace()
    for _ in range(20):
        pace.saw(0.010)
    pace.saw(FAST_CALL_S * 3)
    assert pace.fast
