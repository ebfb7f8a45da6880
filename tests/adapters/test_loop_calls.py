"""``run_on_loop``: trio awaiting coroutines on an asyncio loop, as a guest and from a thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

from orpipe.adapters.bridge.loop_calls import LoopGone, run_on_loop
from tests.adapters.asyncio_support import run_on

T = TypeVar("T")


async def in_trio(mode: str, trio_fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``trio_fn`` in trio next to the running asyncio loop, the way the bridges do."""
    loop = asyncio.get_running_loop()
    if mode == "thread":
        return await asyncio.to_thread(trio.run, trio_fn)
    done: asyncio.Future[Any] = loop.create_future()
    trio.lowlevel.start_guest_run(
        trio_fn,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=done.set_result,
        host_uses_signal_set_wakeup_fd=False,
    )
    result = await done
    return result.unwrap()  # type: ignore[no-any-return]


@pytest.fixture(params=["guest", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_result_comes_back_and_the_coroutine_ran_on_the_loop(mode: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        async def tool() -> tuple[str, int]:
            assert asyncio.get_running_loop() is loop
            await asyncio.sleep(0.01)
            return "sunny", threading.get_ident()

        async def trio_side() -> tuple[str, int]:
            return await run_on_loop(loop, tool)

        answer, thread = await in_trio(mode, trio_side)
        assert answer == "sunny"
        assert thread == loop_thread

    run_on("asyncio", main)


def test_an_exception_reaches_trio_as_itself(mode: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def tool() -> None:
            raise KeyError("no such city")

        async def trio_side() -> str:
            try:
                await run_on_loop(loop, tool)
            except KeyError as exc:
                return str(exc)
            return "no error"

        assert await in_trio(mode, trio_side) == "'no such city'"

    run_on("asyncio", main)


def test_a_trio_timeout_cancels_the_asyncio_task_and_waits_for_it(mode: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        async def tool() -> None:
            seen.append("started")
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.01)  # some clean-up of its own
                seen.append("cancelled")
                raise

        async def trio_side() -> bool:
            with trio.move_on_after(0.05) as scope:
                await run_on_loop(loop, tool)
            return scope.cancelled_caught

        assert await in_trio(mode, trio_side) is True
        # Cancelled on the loop, and finished before run_on_loop returned.
        assert seen == ["started", "cancelled"]

    run_on("asyncio", main)


def test_a_closed_loop_is_a_clear_error() -> None:
    loop = asyncio.new_event_loop()
    loop.close()

    async def tool() -> None:
        raise AssertionError("never runs")

    async def trio_side() -> str:
        try:
            await run_on_loop(loop, tool)
        except LoopGone as exc:
            return str(exc)
        return "ran"

    assert "event loop has closed" in trio.run(trio_side)
