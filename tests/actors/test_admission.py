"""The admission actor with AdmissionDesk: limit, FIFO, shedding, deadlines, closing."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from orpipe.actors.admission import AdmissionDesk, admission
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import (
    AdmissionRejected,
    EngineClosed,
    RequestDeadlineExceeded,
    RequestShed,
)
from orpipe.engine.messages import Failed
from orpipe.engine.request import RequestHandle
from tests.actors.fakes import Finished, drain_outbound, make_handle, tasks_named


def _desk(**config: object) -> AdmissionDesk:
    return AdmissionDesk(EngineConfig(**config))  # type: ignore[arg-type]


async def _admitted(receive: trio.MemoryReceiveChannel[RequestHandle]) -> list[RequestHandle]:
    await trio.testing.wait_all_tasks_blocked()
    out = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out


async def test_admits_up_to_the_limit_then_fifo_on_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    desk = _desk(max_concurrent_requests=2, queue_maxsize=2)
    send, receive = trio.open_memory_channel[RequestHandle](10)
    handles = [make_handle() for _ in range(5)]
    async with trio.open_nursery() as nursery:
        await nursery.start(admission, desk, send, name="admission-actor")
        for handle in handles[:4]:
            desk.submit(handle)
        with pytest.raises(AdmissionRejected):
            desk.submit(handles[4])  # 2 slots and 2 places are taken
        first = await _admitted(receive)
        assert first == handles[:2]
        assert all(h.admitted_at == trio.current_time() for h in first)
        assert desk.statistics().waiting == 2
        assert desk.statistics().rejected_total == 1
        desk.release(handles[0])
        assert await _admitted(receive) == [handles[2]]
        desk.release(handles[1])
        assert await _admitted(receive) == [handles[3]]
        assert await _admitted(receive) == []
        stats = desk.statistics()
        assert (stats.in_flight, stats.waiting, stats.admitted_total) == (2, 0, 4)
        desk.close()
    assert not tasks_named("admission-actor")


async def test_withdrawn_request_is_never_admitted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    desk = _desk(max_concurrent_requests=1, queue_maxsize=5)
    send, receive = trio.open_memory_channel[RequestHandle](10)
    a, b, c = make_handle(), make_handle(), make_handle()
    async with trio.open_nursery() as nursery:
        await nursery.start(admission, desk, send, name="admission-actor")
        for handle in (a, b, c):
            desk.submit(handle)
        assert await _admitted(receive) == [a]
        assert desk.withdraw(b.request_id) is b
        desk.release(a)
        assert await _admitted(receive) == [c]
        desk.close()


async def test_queue_deadline_sheds(autojump_clock: trio.testing.MockClock) -> None:
    desk = _desk(
        max_concurrent_requests=1, queue_maxsize=5, queue_deadline_ms=1500, busy_retry_after_s=7
    )
    send, receive = trio.open_memory_channel[RequestHandle](10)
    finished = Finished()
    running, late = make_handle(), make_handle(finished=finished)
    async with trio.open_nursery() as nursery:
        await nursery.start(admission, desk, send, name="admission-actor")
        start = trio.current_time()
        desk.submit(running)
        assert await _admitted(receive) == [running]
        await trio.sleep(0.5)
        desk.submit(late)
        with trio.fail_after(10):
            await finished.called.wait()
        assert finished.times[0] - start == pytest.approx(2.0)
        [(handle, ending)] = finished.endings
        assert handle is late
        assert isinstance(ending, Failed)
        assert isinstance(ending.error, RequestShed)
        assert ending.error.waited_s == pytest.approx(1.5)
        assert ending.error.retry_after_s == 7
        [batch] = drain_outbound(late)  # the consumer sees the ending
        assert batch.events == (ending,)
        stats = desk.statistics()
        assert (stats.shed_total, stats.waiting, stats.in_flight) == (1, 0, 1)
        desk.close()


async def test_request_deadline_while_waiting(autojump_clock: trio.testing.MockClock) -> None:
    desk = _desk(max_concurrent_requests=1, queue_maxsize=5, request_deadline_s=30)
    send, receive = trio.open_memory_channel[RequestHandle](10)
    finished = Finished()
    running = make_handle()
    async with trio.open_nursery() as nursery:
        await nursery.start(admission, desk, send, name="admission-actor")
        desk.submit(running)
        assert await _admitted(receive) == [running]
        doomed = make_handle(deadline=trio.current_time() + 3, finished=finished)
        desk.submit(doomed)
        start = trio.current_time()
        with trio.fail_after(10):
            await finished.called.wait()
        assert finished.times[0] - start == pytest.approx(3.0)
        [(_, ending)] = finished.endings
        assert isinstance(ending, Failed)
        assert isinstance(ending.error, RequestDeadlineExceeded)
        assert desk.statistics().shed_total == 0
        desk.close()


async def test_closing_the_desk_ends_the_actor_and_closes_its_outbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    desk = _desk(max_concurrent_requests=1, queue_maxsize=5)
    send, receive = trio.open_memory_channel[RequestHandle](10)
    a, b = make_handle(), make_handle()
    async with trio.open_nursery() as nursery:
        await nursery.start(admission, desk, send, name="admission-actor")
        desk.submit(a)
        desk.submit(b)
        assert await _admitted(receive) == [a]
        assert desk.close() == [b]  # the waiting one goes back to the engine
        with pytest.raises(EngineClosed):
            desk.submit(make_handle())
        with trio.fail_after(1), pytest.raises(trio.EndOfChannel):
            await receive.receive()
    assert not tasks_named("admission-actor")
    desk.release(a)  # an admitted request may still finish after close


async def test_cancellation_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    desk = _desk(max_concurrent_requests=1, queue_maxsize=5, queue_deadline_ms=60_000)
    send, receive = trio.open_memory_channel[RequestHandle](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(admission, desk, send, name="admission-actor")
            desk.submit(make_handle())  # blocked handing it to a fetcher that never reads
            desk.submit(make_handle())  # waiting, with a shedding timer armed
            await trio.testing.wait_all_tasks_blocked()
            assert receive.statistics().tasks_waiting_send == 1
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    assert not tasks_named("admission-actor")
    assert receive.statistics().open_send_channels == 0
