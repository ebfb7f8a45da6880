"""``engine.breaker.Breaker`` keyed by (user, tool): each key trips, probes and heals alone.

The per-user wrapper's tests (tests/adapters/test_user_breaker.py) cover the
states in depth; these check that keys never leak into one another.
"""

from __future__ import annotations

import pytest

from orpipe.engine.breaker import Breaker, BreakerDecision

Key = tuple[str, str]

ALICE_SEARCH = ("alice", "search")
ALICE_WEATHER = ("alice", "weather")
BOB_SEARCH = ("bob", "search")

CLOSED = BreakerDecision(allowed=True, retry_after_s=0.0, state="closed")
TRIAL = BreakerDecision(allowed=True, retry_after_s=0.0, state="half_open")


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> Breaker[Key]:
    return Breaker(threshold=3, window_s=60.0, cooldown_s=30.0, clock=clock)


def fail(breaker: Breaker[Key], key: Key, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(key)


def trip(breaker: Breaker[Key], key: Key) -> None:
    fail(breaker, key, breaker.threshold)
    assert breaker.state(key) == "open"


def test_opening_one_key_leaves_the_users_other_tools_and_other_users_closed(
    breaker: Breaker[Key],
) -> None:
    trip(breaker, ALICE_SEARCH)

    assert breaker.check(ALICE_SEARCH) == BreakerDecision(False, 30.0, "open")
    assert breaker.check(ALICE_WEATHER) == CLOSED
    assert breaker.check(BOB_SEARCH) == CLOSED
    assert breaker.state(ALICE_WEATHER) == "closed"
    assert breaker.state(BOB_SEARCH) == "closed"


def test_failures_are_counted_per_key(breaker: Breaker[Key]) -> None:
    for _ in range(2):  # six failures in all, but two per key
        for key in (ALICE_SEARCH, ALICE_WEATHER, BOB_SEARCH):
            breaker.record_failure(key)

    assert [breaker.state(k) for k in (ALICE_SEARCH, ALICE_WEATHER, BOB_SEARCH)] == [
        "closed",
        "closed",
        "closed",
    ]
    breaker.record_failure(ALICE_WEATHER)
    assert [breaker.state(k) for k in (ALICE_SEARCH, ALICE_WEATHER, BOB_SEARCH)] == [
        "closed",
        "open",
        "closed",
    ]


def test_equal_tuples_are_one_key(breaker: Breaker[Key]) -> None:
    user = "".join(["ali", "ce"])
    fail(breaker, (user, "search"), 2)
    breaker.record_failure(("alice", "sea" + "rch"))

    assert breaker.state(ALICE_SEARCH) == "open"
    assert breaker.statistics()["tracked"] == 1


def test_each_key_gets_its_own_single_trial(breaker: Breaker[Key], clock: FakeClock) -> None:
    trip(breaker, ALICE_SEARCH)
    trip(breaker, BOB_SEARCH)
    clock.advance(30)

    assert breaker.check(ALICE_SEARCH) == TRIAL
    assert breaker.check(ALICE_SEARCH) == BreakerDecision(False, 5.0, "half_open")
    assert breaker.check(BOB_SEARCH) == TRIAL  # alice's trial does not hold bob's back
    assert not breaker.check(BOB_SEARCH).allowed
    assert breaker.check(ALICE_WEATHER) == CLOSED


def test_a_successful_trial_closes_only_its_key(breaker: Breaker[Key], clock: FakeClock) -> None:
    trip(breaker, ALICE_SEARCH)
    trip(breaker, ALICE_WEATHER)
    clock.advance(30)
    assert breaker.check(ALICE_SEARCH).allowed
    assert breaker.check(ALICE_WEATHER).allowed

    breaker.record_success(ALICE_SEARCH)

    assert breaker.state(ALICE_SEARCH) == "closed"
    assert breaker.check(ALICE_SEARCH) == CLOSED
    assert breaker.state(ALICE_WEATHER) == "half_open"
    assert not breaker.check(ALICE_WEATHER).allowed  # its trial is still out


def test_a_failed_trial_reopens_only_its_key(breaker: Breaker[Key], clock: FakeClock) -> None:
    trip(breaker, ALICE_SEARCH)
    trip(breaker, BOB_SEARCH)
    clock.advance(30)
    assert breaker.check(ALICE_SEARCH).allowed
    assert breaker.check(BOB_SEARCH).allowed

    breaker.record_failure(ALICE_SEARCH)
    breaker.record_success(BOB_SEARCH)

    assert breaker.check(ALICE_SEARCH) == BreakerDecision(False, 30.0, "open")
    assert breaker.check(BOB_SEARCH) == CLOSED


def test_abandoning_one_keys_trial_frees_only_that_slot(
    breaker: Breaker[Key], clock: FakeClock
) -> None:
    trip(breaker, ALICE_SEARCH)
    trip(breaker, BOB_SEARCH)
    clock.advance(30)
    assert breaker.check(ALICE_SEARCH).allowed
    assert breaker.check(BOB_SEARCH).allowed

    breaker.record_abandoned(ALICE_SEARCH)

    assert breaker.check(ALICE_SEARCH) == TRIAL
    assert not breaker.check(BOB_SEARCH).allowed


def test_a_success_of_another_key_does_not_close_an_open_key(
    breaker: Breaker[Key], clock: FakeClock
) -> None:
    trip(breaker, ALICE_SEARCH)
    clock.advance(30)
    breaker.record_success(ALICE_WEATHER)
    breaker.record_success(BOB_SEARCH)

    assert breaker.state(ALICE_SEARCH) == "half_open"
    assert breaker.check(ALICE_SEARCH) == TRIAL


def test_keys_tripped_at_different_times_cool_down_on_their_own_clocks(
    breaker: Breaker[Key], clock: FakeClock
) -> None:
    trip(breaker, ALICE_SEARCH)
    clock.advance(20)
    trip(breaker, ALICE_WEATHER)
    clock.advance(10)

    assert breaker.check(ALICE_SEARCH) == TRIAL
    assert breaker.check(ALICE_WEATHER) == BreakerDecision(False, 20.0, "open")


def test_statistics_count_keys(breaker: Breaker[Key], clock: FakeClock) -> None:
    assert breaker.statistics() == {
        "tracked": 0,
        "closed": 0,
        "open": 0,
        "half_open": 0,
        "evicted": 0,
        "max_keys": 10_000,
    }
    trip(breaker, ALICE_SEARCH)
    clock.advance(10)
    trip(breaker, BOB_SEARCH)
    breaker.record_failure(ALICE_WEATHER)
    clock.advance(20)  # alice's search cooled down, bob's search has not

    assert breaker.statistics() == {
        "tracked": 3,
        "closed": 1,
        "open": 1,
        "half_open": 1,
        "evicted": 0,
        "max_keys": 10_000,
    }


def test_a_closed_key_is_forgotten_when_its_failures_expire(
    breaker: Breaker[Key], clock: FakeClock
) -> None:
    trip(breaker, BOB_SEARCH)
    breaker.record_failure(ALICE_SEARCH)
    clock.advance(60)

    assert breaker.check(ALICE_SEARCH) == CLOSED

    assert breaker.statistics()["tracked"] == 1  # bob's open search stays


def test_eviction_prefers_closed_keys_and_leaves_open_ones_alone(clock: FakeClock) -> None:
    breaker: Breaker[Key] = Breaker(threshold=2, window_s=60.0, max_keys=2, clock=clock)
    fail(breaker, ALICE_SEARCH, 2)
    breaker.record_failure(ALICE_WEATHER)

    breaker.record_failure(BOB_SEARCH)  # a third key: one must go

    stats = breaker.statistics()
    assert (stats["tracked"], stats["evicted"], stats["max_keys"]) == (2, 1, 2)
    assert breaker.state(ALICE_SEARCH) == "open"
    breaker.record_failure(ALICE_WEATHER)
    assert breaker.state(ALICE_WEATHER) == "closed"  # its earlier failure was forgotten
