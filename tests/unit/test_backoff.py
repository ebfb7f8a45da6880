"""engine.backoff.capped_backoff: growth, cap, equal jitter, numbering, bad input."""

from __future__ import annotations

import random

import pytest

from orpipe.engine.backoff import capped_backoff


def test_attempt_0_waits_the_base() -> None:
    assert capped_backoff(0, base_s=0.5, cap_s=30.0) == 0.5


def test_each_attempt_multiplies_by_the_factor() -> None:
    waits = [capped_backoff(n, base_s=0.5, cap_s=1000.0) for n in range(5)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert capped_backoff(2, base_s=1.0, cap_s=1000.0, factor=3.0) == 9.0
    assert capped_backoff(7, base_s=1.5, cap_s=1000.0, factor=1.0) == 1.5


def test_the_cap_holds() -> None:
    assert [capped_backoff(n, base_s=0.5, cap_s=4.0) for n in range(3, 7)] == [4.0] * 4
    # A cap below the base wins from the first attempt.
    assert capped_backoff(0, base_s=5.0, cap_s=2.0) == 2.0


def test_a_huge_attempt_gives_the_cap_without_overflow() -> None:
    assert capped_backoff(100_000, base_s=5.0, cap_s=160.0) == 160.0
    assert capped_backoff(100_000, base_s=0.0, cap_s=160.0) == 0.0


def test_the_result_is_a_float() -> None:
    assert type(capped_backoff(1, base_s=1, cap_s=10)) is float


def test_equal_jitter_stays_between_half_and_the_whole_wait() -> None:
    rng = random.Random(20261208)
    for attempt in range(8):
        full = capped_backoff(attempt, base_s=0.25, cap_s=4.0)
        for _ in range(200):
            wait = capped_backoff(attempt, base_s=0.25, cap_s=4.0, rng=rng)
            assert full / 2 <= wait <= full


def test_jitter_spreads_and_is_repeatable_with_a_seed() -> None:
    first = [capped_backoff(3, base_s=1.0, cap_s=100.0, rng=random.Random(7)) for _ in range(3)]
    assert len(set(first)) == 1  # same seed, same draw
    rng = random.Random(7)
    spread = {capped_backoff(3, base_s=1.0, cap_s=100.0, rng=rng) for _ in range(50)}
    assert len(spread) > 40


def test_jitter_takes_exactly_one_draw() -> None:
    rng, twin = random.Random(3), random.Random(3)
    capped_backoff(2, base_s=1.0, cap_s=10.0, rng=rng)
    twin.random()
    assert rng.random() == twin.random()


@pytest.mark.parametrize(
    ("attempt", "kwargs", "message"),
    [
        (-1, {}, "attempt must be 0 or more"),
        (1.0, {}, "attempt must be an int"),
        (True, {}, "attempt must be an int"),
        (0, {"base_s": -0.1}, "base_s must be"),
        (0, {"base_s": float("nan")}, "base_s must be"),
        (0, {"base_s": float("inf")}, "base_s must be"),
        (0, {"cap_s": -1.0}, "cap_s must be"),
        (0, {"cap_s": float("nan")}, "cap_s must be"),
        (0, {"factor": 0.5}, "factor must be"),
        (0, {"factor": float("nan")}, "factor must be"),
    ],
)
def test_bad_input_is_a_clear_value_error(
    attempt: object, kwargs: dict[str, float], message: str
) -> None:
    arguments: dict[str, float] = {"base_s": 1.0, "cap_s": 10.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        capped_backoff(attempt, **arguments)  # type: ignore[arg-type]
