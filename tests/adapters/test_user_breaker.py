"""The per-user breaker: window, open, half-open trial, isolation, bounded memory.

Plain synchronous tests with a hand-driven clock; nothing sleeps.
"""

from __future__ import annotations

import math

import pytest

from orpipe.adapters.openwebui.user_breaker import BreakerDecision, UserBreaker, paused_message
from orpipe.engine.errors import ConfigError


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> UserBreaker:
    return UserBreaker(threshold=5, window_s=60.0, clock=clock)


def fail(breaker: UserBreaker, user: str, times: int) -> None:
    for _ in range(times):
        breaker.record_failure(user)


def trip(breaker: UserBreaker, user: str = "alice") -> None:
    fail(breaker, user, breaker.threshold)
    assert breaker.state(user) == "open"


# -- opening ------------------------------------------------------------------------


def test_opens_at_the_threshold_within_the_window(breaker: UserBreaker, clock: FakeClock) -> None:
    for _ in range(4):
        breaker.record_failure("alice")
        clock.advance(10)
    assert breaker.check("alice") == BreakerDecision(True, 0.0, "closed")

    breaker.record_failure("alice")  # the fifth, 40 s after the first

    assert breaker.check("alice") == BreakerDecision(False, 60.0, "open")


def test_failures_spread_beyond_the_window_do_not_open(
    breaker: UserBreaker, clock: FakeClock
) -> None:
    breaker.record_failure("alice")
    for _ in range(4):
        clock.advance(15)
        breaker.record_failure("alice")  # at 0, 15, 30, 45, 60: the first has left
    assert breaker.state("alice") == "closed"
    assert breaker.check("alice").allowed

    clock.advance(1)
    breaker.record_failure("alice")  # 15, 30, 45, 60, 61: five within 60 s

    assert breaker.state("alice") == "open"


def test_a_failure_exactly_window_old_no_longer_counts(
    breaker: UserBreaker, clock: FakeClock
) -> None:
    breaker.record_failure("alice")
    clock.advance(1)
    fail(breaker, "alice", 3)
    clock.advance(59)  # the first failure is now exactly 60 s old

    breaker.record_failure("alice")

    assert breaker.state("alice") == "closed"


def test_a_success_while_closed_leaves_the_window_alone(breaker: UserBreaker) -> None:
    fail(breaker, "alice", 4)
    breaker.record_success("alice")  # the original cleared everything here

    breaker.record_failure("alice")

    assert breaker.state("alice") == "open"


# -- open ---------------------------------------------------------------------------


def test_retry_after_counts_down_while_open(breaker: UserBreaker, clock: FakeClock) -> None:
    trip(breaker)
    waits = []
    for _ in range(3):
        decision = breaker.check("alice")
        assert not decision.allowed
        assert decision.state == "open"
        waits.append(decision.retry_after_s)
        clock.advance(20)

    assert waits == [60.0, 40.0, 20.0]


def test_a_failure_while_open_does_not_extend_the_pause(
    breaker: UserBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(30)

    breaker.record_failure("alice")  # a straggler admitted before the breaker opened
    breaker.record_success("alice")  # ... and one that succeeded: ignored too

    assert breaker.check("alice") == BreakerDecision(False, 30.0, "open")


def test_cooldown_defaults_to_the_window_and_can_differ(clock: FakeClock) -> None:
    assert UserBreaker(window_s=42.0, clock=clock).cooldown_s == 42.0
    breaker = UserBreaker(threshold=1, window_s=60.0, cooldown_s=5.0, clock=clock)
    breaker.record_failure("alice")

    assert breaker.check("alice").retry_after_s == 5.0
    clock.advance(5)
    assert breaker.check("alice") == BreakerDecision(True, 0.0, "half_open")


# -- half-open ------------------------------------------------------------------------


def test_half_open_allows_exactly_one_trial(breaker: UserBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(60)

    first = breaker.check("alice")
    second = breaker.check("alice")
    third = breaker.check("alice")

    assert first == BreakerDecision(True, 0.0, "half_open")
    assert second == third == BreakerDecision(False, 5.0, "half_open")


def test_a_successful_trial_closes_and_clears_the_history(
    breaker: UserBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(60)
    assert breaker.check("alice").allowed

    breaker.record_success("alice")

    assert breaker.check("alice") == BreakerDecision(True, 0.0, "closed")
    fail(breaker, "alice", 4)
    assert breaker.state("alice") == "closed"  # a fresh window: four are not enough


def test_a_failed_trial_reopens_for_a_full_cooldown(breaker: UserBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(75)
    assert breaker.check("alice").allowed

    breaker.record_failure("alice")

    assert breaker.check("alice") == BreakerDecision(False, 60.0, "open")
    clock.advance(60)
    assert breaker.check("alice") == BreakerDecision(True, 0.0, "half_open")


def test_an_abandoned_trial_frees_the_slot_without_deciding(
    breaker: UserBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    clock.advance(60)
    assert breaker.check("alice").allowed

    breaker.record_abandoned("alice")  # e.g. the user pressed stop

    assert breaker.state("alice") == "half_open"
    assert breaker.check("alice") == BreakerDecision(True, 0.0, "half_open")
    assert not breaker.check("alice").allowed


def test_an_unreported_trial_expires(clock: FakeClock) -> None:
    breaker = UserBreaker(threshold=1, window_s=10.0, trial_timeout_s=30.0, clock=clock)
    breaker.record_failure("alice")
    clock.advance(10)
    assert breaker.check("alice").allowed  # the trial; its caller never reports back

    clock.advance(29)
    assert not breaker.check("alice").allowed
    clock.advance(1)
    assert breaker.check("alice") == BreakerDecision(True, 0.0, "half_open")


def test_abandoning_while_closed_or_untracked_changes_nothing(breaker: UserBreaker) -> None:
    breaker.record_abandoned("nobody")
    breaker.record_success("nobody")
    fail(breaker, "alice", 4)
    breaker.record_abandoned("alice")

    breaker.record_failure("alice")

    assert breaker.state("alice") == "open"
    assert breaker.statistics()["tracked_users"] == 1


# -- isolation and memory --------------------------------------------------------------


def test_other_users_are_unaffected(breaker: UserBreaker) -> None:
    fail(breaker, "bob", 4)
    trip(breaker, "alice")

    assert breaker.check("bob") == BreakerDecision(True, 0.0, "closed")
    assert breaker.check("carol") == BreakerDecision(True, 0.0, "closed")
    breaker.record_failure("bob")
    assert breaker.state("bob") == "open"
    assert breaker.state("carol") == "closed"


def test_expired_failures_are_pruned_and_the_user_forgotten(
    breaker: UserBreaker, clock: FakeClock
) -> None:
    fail(breaker, "alice", 3)
    assert breaker.statistics()["tracked_users"] == 1
    clock.advance(60)

    assert breaker.check("alice").allowed

    assert breaker.statistics()["tracked_users"] == 0


def test_a_reset_user_is_forgotten(breaker: UserBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(60)
    breaker.check("alice")
    breaker.record_success("alice")

    assert breaker.statistics()["tracked_users"] == 0


def test_memory_stays_bounded_with_100k_users_and_closed_users_go_first(
    clock: FakeClock,
) -> None:
    breaker = UserBreaker(threshold=2, window_s=60.0, max_users=1000, clock=clock)
    paused = [f"paused-{i}" for i in range(10)]
    for user in paused:
        fail(breaker, user, 2)

    for i in range(100_000):
        breaker.record_failure(f"user-{i}")

    stats = breaker.statistics()
    assert stats["tracked_users"] == 1000
    assert stats["evicted"] == 100_000 + 10 - 1000
    # The open users were seen least recently, yet closed users were evicted first.
    assert all(breaker.state(user) == "open" for user in paused)
    assert stats["open"] == 10
    assert stats["closed"] == 990
    # The survivors among the closed are the most recently seen.
    breaker.record_failure("user-99999")
    assert breaker.state("user-99999") == "open"
    breaker.record_failure("user-0")
    assert breaker.state("user-0") == "closed"  # evicted long ago: a fresh start


def test_open_users_are_evicted_only_when_all_tracked_users_are_open(
    clock: FakeClock,
) -> None:
    breaker = UserBreaker(threshold=1, window_s=60.0, max_users=3, clock=clock)
    for user in ("a", "b", "c"):
        breaker.record_failure(user)
    breaker.check("a")  # "a" seen again: "b" is now the least recently seen

    breaker.record_failure("d")

    assert [breaker.state(u) for u in ("a", "b", "c", "d")] == ["open", "closed", "open", "open"]
    assert breaker.statistics()["tracked_users"] == 3


def test_statistics_count_open_and_half_open(breaker: UserBreaker, clock: FakeClock) -> None:
    trip(breaker, "alice")
    clock.advance(30)
    trip(breaker, "bob")
    fail(breaker, "carol", 1)
    clock.advance(30)  # alice's cool-down is over, bob's is not

    assert breaker.statistics() == {
        "tracked_users": 3,
        "closed": 1,
        "open": 1,
        "half_open": 1,
        "evicted": 0,
        "max_users": 10_000,
    }


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("threshold", {"threshold": 0}),
        ("window_s", {"window_s": 0.0}),
        ("window_s", {"window_s": math.nan}),
        ("cooldown_s", {"cooldown_s": -1.0}),
        ("max_users", {"max_users": 0}),
        ("trial_timeout_s", {"trial_timeout_s": math.inf}),
    ],
)
def test_settings_out_of_range_are_rejected(field: str, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError) as raised:
        UserBreaker(**kwargs)  # type: ignore[arg-type]
    assert raised.value.field == field


# -- the message -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after_s", "shown"),
    [(0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (59.5, 60), (-3.0, 1), (math.inf, 1)],
)
def test_paused_message_rounds_up_to_whole_seconds(retry_after_s: float, shown: int) -> None:
    assert paused_message(retry_after_s) == (
        f"Temporarily paused after repeated errors; retry in {shown} s."
    )
