"""Idle-flush timers (actors.idle_flush): one alarm, re-aimed, never out of order."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
import trio.testing

from orpipe.actors.delta_batching import DeltaBatcher
from orpipe.actors.idle_flush import IdleFlushes
from orpipe.engine.pipeline_messages import BatchOut, DeltaEvent, RequestBatch, StreamEnded, TextRun
from orpipe.engine.statistics import ActorCounters


def _batcher(rid: str) -> DeltaBatcher:
    return DeltaBatcher(rid, char_limit=100, event_limit=50)


def _push(batcher: DeltaBatcher, seq: int, text: str) -> None:
    assert batcher.push(DeltaEvent(seq=seq, channel="text", text=text)) == []


def _run(rid: str, text: str, events: int) -> TextRun:
    return TextRun(request_id=rid, channel="text", text=text, events=events)


class _Alarm:
    """An ``IdleFlushes`` with its alarm running, what it sends, and the time it started."""

    def __init__(self) -> None:
        self.counters = ActorCounters()
        self.flushes = IdleFlushes(self.counters)
        self.send, self.receive = trio.open_memory_channel[tuple[BatchOut, ...]](10)
        self.start = 0.0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_Alarm]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flushes.alarm, self.send)
            await trio.testing.wait_all_tasks_blocked()
            self.start = trio.current_time()
            yield self
            nursery.cancel_scope.cancel()

    def pending(self, rid: str, text: str, idle_s: float) -> DeltaBatcher:
        """A request whose batcher holds ``text`` as a run, its clock started."""
        batcher = _batcher(rid)
        _push(batcher, 0, text)
        self.flushes.arm(batcher, idle_s)
        return batcher

    async def flushed(self) -> tuple[str, str, float]:
        """The next flushed run: its request, its text, and when, since the start (in ms)."""
        (batch,) = await self.receive.receive()
        assert isinstance(batch, RequestBatch)
        (run,) = batch.items
        assert isinstance(run, TextRun) and run.events == 1
        return batch.request_id, run.text, round((trio.current_time() - self.start) * 1000, 3)


async def test_each_run_is_flushed_at_its_own_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _Alarm().running() as alarm:
        alarm.pending("a", "slow", 0.5)
        alarm.pending("b", "quick", 0.1)  # earlier than the alarm's aim: the alarm moves
        assert alarm.counters.snapshot()["now_pending_runs"] == 2
        assert await alarm.flushed() == ("b", "quick", 100)
        assert await alarm.flushed() == ("a", "slow", 500)
        assert alarm.counters.snapshot()["idle_flushes"] == 2
        assert alarm.counters.snapshot()["now_pending_runs"] == 0


async def test_a_disarmed_run_is_not_flushed_and_the_alarm_moves_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with _Alarm().running() as alarm:
        left = alarm.pending("a", "left by size", 0.1)
        alarm.pending("b", "later", 0.3)
        left.flush(final=False)  # the run left some other way (by size, say)
        alarm.flushes.settle(left, 0.1)
        assert await alarm.flushed() == ("b", "later", 300)
        assert alarm.counters.snapshot()["idle_flushes"] == 1  # the alarm woke once, for b


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
