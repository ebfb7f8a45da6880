"""Idle-flush timers (actors.idle_flush): one alarm, re-aimed, never out of order."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.delta_batching import DeltaBatcher
from actors.idle_flush import IdleFlushes
from engine.messages import BatchOut, DeltaEvent, RequestBatch, StreamEnded, TextRun
from engine.statistics import ActorCounters


def _batcher(rid: str) -> DeltaBatcher:
    return DeltaBatcher(rid, char_limit=100, event_limit=50)


def _push(batcher: DeltaBatcher, seq: int, text: str) -> None:
    assert batcher.push(DeltaEvent(seq=seq, channel="text", text=text)) == []


def _run(rid: str, text: str, events: int) -> TextRun:
    return TextRun(request_id=rid, channel="text", text=text, events=events)


async def test_each_run_is_flushed_at_its_own_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counters = ActorCounters()
    flushes = IdleFlushes(counters)
    send, receive = trio.open_memory_channel[tuple[BatchOut, ...]](10)
    a, b = _batcher("a"), _batcher("b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flushes.alarm, send)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        _push(a, 0, "slow")
        flushes.arm(a, 0.5)
        _push(b, 0, "quick")
        flushes.arm(b, 0.1)  # earlier than the alarm's aim: the alarm moves
        assert counters.snapshot()["now_pending_runs"] == 2
        assert await receive.receive() == (
            RequestBatch(request_id="b", items=(_run("b", "quick", 1),)),
        )
        assert trio.current_time() - start == pytest.approx(0.1)
        assert await receive.receive() == (
            RequestBatch(request_id="a", items=(_run("a", "slow", 1),)),
        )
        assert trio.current_time() - start == pytest.approx(0.5)
        assert counters.snapshot()["idle_flushes"] == 2
        assert counters.snapshot()["now_pending_runs"] == 0
        nursery.cancel_scope.cancel()


async def test_a_disarmed_run_is_not_flushed_and_the_alarm_moves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counters = ActorCounters()
    flushes = IdleFlushes(counters)
    send, receive = trio.open_memory_channel[tuple[BatchOut, ...]](10)
    a, b = _batcher("a"), _batcher("b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(flushes.alarm, send)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        _push(a, 0, "left by size")
        flushes.arm(a, 0.1)
        _push(b, 0, "later")
        flushes.arm(b, 0.3)
        a.flush(final=False)  # the run left some other way (by size, say)
        flushes.settle(a, 0.1)
        assert await receive.receive() == (
            RequestBatch(request_id="b", items=(_run("b", "later", 1),)),
        )
        assert trio.current_time() - start == pytest.approx(0.3)
        assert counters.snapshot()["idle_flushes"] == 1  # the alarm woke once, for b
        nursery.cancel_scope.cancel()


async def test_an_idle_flush_never_overtakes_a_bundle_waiting_for_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The request's producer is blocked on a full channel when its next run's
    deadline passes: the run arrives after the bundle, not before it."""
    flushes = IdleFlushes(ActorCounters())
    send, receive = trio.open_memory_channel[tuple[BatchOut, ...]](1)
    other = (StreamEnded(request_id="other", seq=0),)
    send.send_nowait(other)  # full
    batcher = _batcher("r")
    first = (RequestBatch(request_id="r", items=(_run("r", "first", 1),)),)

    async def producer() -> None:
        # As the express lane does: take, then send in the same step.
        _push(batcher, 1, "second")
        flushes.arm(batcher, 0.05)
        await send.send(first)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flushes.alarm, send.clone())
        nursery.start_soon(producer)
        await trio.sleep(1)  # the deadline passed long ago; nobody has read yet
        received = [await receive.receive() for _ in range(3)]
        assert received == [
            other,
            first,
            (RequestBatch(request_id="r", items=(_run("r", "second", 1),)),),
        ]
        nursery.cancel_scope.cancel()


def test_zero_idle_means_no_timer() -> None:
    flushes = IdleFlushes(ActorCounters())
    batcher = _batcher("r")
    _push(batcher, 0, "text")
    flushes.arm(batcher, 0)
    assert flushes.pending == 0
