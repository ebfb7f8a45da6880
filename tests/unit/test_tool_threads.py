"""Blocking tools in worker threads: the runaway threads a cancelled call leaves behind."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from orpipe.actors.tool_threads import RunawayThreads

#: Generous bound for anything a worker thread has to do; polls end much sooner.
PATIENCE_S = 10.0


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (a few ms apart) until it holds; fail after ``PATIENCE_S``."""
    with trio.fail_after(PATIENCE_S):
        while not condition():  # noqa: ASYNC110 - set from worker threads
            await trio.sleep(0.005)


class Blocker:
    """A blocking tool function that runs until released."""

    def __init__(self, result: object = "late", error: Exception | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.finished = threading.Event()
        self.result = result
        self.error = error

    def __call__(self, *args: Any) -> object:
        self.args = args
        self.started.set()
        try:
            if not self.release.wait(PATIENCE_S):
                raise TimeoutError("never released")
            if self.error is not None:
                raise self.error
            return self.result
        finally:
            self.finished.set()


@pytest.fixture
def blockers() -> Iterator[list[Blocker]]:
    """Blockers made by a test; all released at its end so no thread outlives it."""
    made: list[Blocker] = []
    yield made
    for blocker in made:
        blocker.release.set()


def make(blockers: list[Blocker], **kw: Any) -> Blocker:
    blocker = Blocker(**kw)
    blockers.append(blocker)
    return blocker


async def abandon(
    runaways: RunawayThreads, tool: str, blocker: Blocker, limiter: trio.CapacityLimiter
) -> None:
    """Start ``blocker`` as ``tool`` and stop waiting for it once its thread is running."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def call() -> None:
            with scope:
                await runaways.run(tool, blocker, limiter=limiter)
            assert scope.cancelled_caught

        nursery.start_soon(call)
        await until(blocker.started.is_set)
        scope.cancel()


# -- calls that end normally -----------------------------------------------------------


async def test_a_call_that_returns_leaves_no_runaway() -> None:
    changes: list[int] = []
    runaways = RunawayThreads(limit=1, on_change=lambda: changes.append(1))
    limiter = trio.CapacityLimiter(2)

    result = await runaways.run("echo", lambda *a: ("ran", a), 1, "two", limiter=limiter)

    assert result == ("ran", (1, "two"))
    assert runaways.count("echo") == 0
    assert runaways.total() == 0
    assert not runaways.refuses("echo")
    assert limiter.borrowed_tokens == 0
    assert changes == []  # only a runaway's end is news


async def test_the_function_runs_in_a_named_worker_thread() -> None:
    runaways = RunawayThreads(limit=1)

    name = await runaways.run(
        "lookup", lambda: threading.current_thread().name, limiter=trio.CapacityLimiter(1)
    )

    assert name == "tool lookup"
    assert name != threading.current_thread().name


async def test_exceptions_from_the_function_propagate_and_leave_no_runaway() -> None:
    runaways = RunawayThreads(limit=1)
    limiter = trio.CapacityLimiter(1)

    def boom(value: int) -> None:
        raise ValueError(f"bad {value}")

    with pytest.raises(ValueError, match="bad 3"):
        await runaways.run("boom", boom, 3, limiter=limiter)

    assert runaways.count("boom") == 0
    assert limiter.borrowed_tokens == 0


async def test_the_call_holds_a_limiter_token_while_it_runs(blockers: list[Blocker]) -> None:
    runaways = RunawayThreads(limit=1)
    limiter = trio.CapacityLimiter(3)
    blocker = make(blockers, result=42)

    async with trio.open_nursery() as nursery:
        results: list[object] = []

        async def call() -> None:
            results.append(await runaways.run("slow", blocker, limiter=limiter))

        nursery.start_soon(call)
        await until(blocker.started.is_set)
        assert limiter.borrowed_tokens == 1
        assert runaways.count("slow") == 0  # still waited for: not a runaway
        blocker.release.set()

    assert results == [42]
    assert limiter.borrowed_tokens == 0
    assert runaways.count("slow") == 0


# -- calls that stop waiting ------------------------------------------------------------


async def test_a_cancelled_call_leaves_a_counted_runaway(blockers: list[Blocker]) -> None:
    runaways = RunawayThreads(limit=1)
    blocker = make(blockers)

    await abandon(runaways, "slow", blocker, trio.CapacityLimiter(4))

    assert not blocker.finished.is_set()
    assert runaways.count("slow") == 1
    assert runaways.total() == 1
    assert runaways.refuses("slow")
    assert runaways.count("fast") == 0
    assert not runaways.refuses("fast")


async def test_a_move_on_after_timeout_leaves_a_runaway(blockers: list[Blocker]) -> None:
    runaways = RunawayThreads(limit=2)
    blocker = make(blockers)

    with trio.move_on_after(0.05) as timer:
        await runaways.run("slow", blocker, limiter=trio.CapacityLimiter(1))

    assert timer.cancelled_caught
    assert runaways.count("slow") == 1
    assert not runaways.refuses("slow")  # one of two allowed


async def test_refusal_starts_at_the_limit_and_counts_per_tool(blockers: list[Blocker]) -> None:
    runaways = RunawayThreads(limit=2)
    limiter = trio.CapacityLimiter(10)

    await abandon(runaways, "slow", make(blockers), limiter)
    assert not runaways.refuses("slow")
    await abandon(runaways, "slow", make(blockers), limiter)
    await abandon(runaways, "other", make(blockers), limiter)

    assert runaways.count("slow") == 2
    assert runaways.refuses("slow")
    assert runaways.count("other") == 1
    assert not runaways.refuses("other")
    assert runaways.total() == 3


async def test_a_runaway_that_ends_is_no_longer_counted_and_reported_in_trio(
    blockers: list[Blocker],
) -> None:
    in_trio: list[bool] = []
    runaways = RunawayThreads(limit=1)

    def on_change() -> None:
        trio.lowlevel.current_task()  # raises outside trio
        in_trio.append(runaways.count("slow") == 0)

    runaways.on_change = on_change
    blocker = make(blockers)
    await abandon(runaways, "slow", blocker, trio.CapacityLimiter(1))
    assert runaways.refuses("slow")
    assert in_trio == []

    blocker.release.set()
    await until(lambda: bool(in_trio))

    assert in_trio == [True]
    assert runaways.count("slow") == 0
    assert runaways.total() == 0
    assert not runaways.refuses("slow")


async def test_a_runaway_that_raises_when_it_ends_is_no_longer_counted(
    blockers: list[Blocker],
) -> None:
    changes: list[int] = []
    runaways = RunawayThreads(limit=1, on_change=lambda: changes.append(1))
    blocker = make(blockers, error=RuntimeError("late failure"))
    await abandon(runaways, "slow", blocker, trio.CapacityLimiter(1))

    blocker.release.set()
    await until(lambda: bool(changes))

    assert runaways.count("slow") == 0


async def test_runaways_end_one_at_a_time(blockers: list[Blocker]) -> None:
    changes: list[int] = []
    runaways = RunawayThreads(limit=5)
    runaways.on_change = lambda: changes.append(runaways.count("slow"))
    first, second = make(blockers), make(blockers)
    limiter = trio.CapacityLimiter(2)
    await abandon(runaways, "slow", first, limiter)
    await abandon(runaways, "slow", second, limiter)
    assert runaways.count("slow") == 2

    second.release.set()
    await until(lambda: len(changes) == 1)
    assert runaways.count("slow") == 1

    first.release.set()
    await until(lambda: len(changes) == 2)
    assert changes == [1, 0]


async def test_without_on_change_a_runaway_still_ends_quietly(blockers: list[Blocker]) -> None:
    runaways = RunawayThreads(limit=1)
    blocker = make(blockers)
    await abandon(runaways, "slow", blocker, trio.CapacityLimiter(1))

    blocker.release.set()
    await until(lambda: runaways.count("slow") == 0)

    assert runaways.total() == 0


async def test_a_runaway_holds_its_limiter_token_until_it_really_ends(
    blockers: list[Blocker],
) -> None:
    runaways = RunawayThreads(limit=3)
    limiter = trio.CapacityLimiter(1)
    blocker = make(blockers)
    await abandon(runaways, "slow", blocker, limiter)

    assert limiter.borrowed_tokens == 1
    assert limiter.available_tokens == 0
    with trio.move_on_after(0.05) as blocked:
        await limiter.acquire()  # no thread can start meanwhile
    assert blocked.cancelled_caught

    blocker.release.set()
    await until(lambda: limiter.borrowed_tokens == 0)
    assert runaways.count("slow") == 0
    assert await runaways.run("slow", lambda: "free again", limiter=limiter) == "free again"


async def test_a_call_cancelled_before_its_thread_started_is_not_a_runaway(
    blockers: list[Blocker],
) -> None:
    runaways = RunawayThreads(limit=1)
    limiter = trio.CapacityLimiter(1)
    ran: list[int] = []
    await limiter.acquire()  # every thread token is taken

    with trio.move_on_after(0.05) as timer:
        await runaways.run("slow", lambda: ran.append(1), limiter=limiter)
    assert timer.cancelled_caught
    limiter.release()
    await trio.sleep(0.05)

    assert ran == []
    assert runaways.count("slow") == 0
    assert not runaways.refuses("slow")
