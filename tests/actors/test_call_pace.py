"""When holding asks and replies for company pays (``actors/call_pace.py``): only while the
calls one sees are fast (a CPU-bound host), never while they wait on a slow API."""

from __future__ import annotations

from actors.call_pace import FAST_CALL_S, HOLD_S, CallPace


def test_nothing_is_held_before_a_reply_was_seen() -> None:
    assert CallPace().hold_s == 0.0


def test_fast_replies_turn_the_hold_on_and_slow_ones_off_again() -> None:
    pace = CallPace()
    for _ in range(5):
        pace.saw(0.010)  # latency 0 at 50 in flight: the host's CPU is the wait
    assert pace.hold_s == HOLD_S
    for _ in range(30):
        pace.saw(0.200)  # the API's 200 ms: the host is idle, a hold only delays
    assert not pace.fast and pace.hold_s == 0.0


def test_one_slow_reply_among_fast_ones_does_not_flip_the_pace() -> None:
    pace = CallPace()
    for _ in range(20):
        pace.saw(0.010)
    pace.saw(FAST_CALL_S * 3)
    assert pace.fast
