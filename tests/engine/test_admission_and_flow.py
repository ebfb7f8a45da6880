"""Admission at its limits, backpressure to the socket, cancellation and deadlines."""

from __future__ import annotations

import pytest
import trio

from orpipe.bench.mock_scenarios import plan
from orpipe.engine import (
    AdmissionRejected,
    Cancelled,
    Completed,
    Failed,
    RequestDeadlineExceeded,
    RequestShed,
    TextDelta,
)
from tests.engine.support import collect, metadata, mock_server, request, running_engine, wait_until


async def test_request_701_is_rejected_at_once_and_cancelled_waiters_free_places() -> None:
    async with mock_server() as server, running_engine(server, shutdown_grace_s=0.1) as engine:
        streams = [engine.submit(request("stall", stall_after=0)) for _ in range(700)]
        await wait_until(lambda: engine.statistics().admission.in_flight == 200)
        await wait_until(lambda: server.stats.streams_active == 200)
        stats = engine.statistics()
        assert stats.admission.waiting == 500
        # Waiting requests are places in a room, not tasks: only 200 fetches run.
        assert stats.actors["fetcher"]["requests"] == 200

        # submit() is synchronous: the rejection comes at once, by construction.
        with pytest.raises(AdmissionRejected) as rejected:
            engine.submit(request("text"))
        assert rejected.value.retry_after_s > 0
        assert "busy; retry in" in rejected.value.message

        # Five leave by closing their stream, five by an explicit cancel.
        waiting = streams[-10:]
        for stream in waiting[:5]:
            await stream.aclose()
            assert isinstance(stream.ending, Cancelled)
        for stream in waiting[5:]:
            assert engine.cancel(stream.request_id, "user left")
        endings = [(await collect(stream)).ending for stream in waiting[5:]]
        assert all(isinstance(e, Cancelled) and e.reason == "user left" for e in endings)
        assert engine.statistics().admission.waiting == 490

        extra = [engine.submit(request("text")) for _ in range(10)]
        with pytest.raises(AdmissionRejected):
            engine.submit(request("text"))
        assert engine.statistics().admission.rejected_total == 2
        assert len(extra) == 10


async def test_a_freed_slot_admits_the_oldest_waiting_request() -> None:
    async with (
        mock_server() as server,
        running_engine(server, max_concurrent_requests=1, queue_maxsize=2) as engine,
    ):
        first = engine.submit(request("text", tokens=5))
        second = engine.submit(request("text", tokens=5, seed=2))
        third = engine.submit(request("text", tokens=5, seed=3))
        with pytest.raises(AdmissionRejected):
            engine.submit(request("text"))
        results = [await collect(s) for s in (first, second, third)]
    assert all(isinstance(r.ending, Completed) for r in results)


async def test_queue_deadline_sheds_a_request_that_waited_too_long() -> None:
    async with (
        mock_server() as server,
        running_engine(
            server, max_concurrent_requests=1, queue_maxsize=5, queue_deadline_ms=50
        ) as engine,
    ):
        blocker = engine.submit(request("stall", stall_after=0))
        waiter = engine.submit(request("text"))
        got = await collect(waiter)
        assert isinstance(got.ending, Failed)
        assert isinstance(got.ending.error, RequestShed)
        assert "busy" in got.ending.message
        assert engine.statistics().admission.shed_total == 1
        await blocker.aclose()


async def test_a_consumer_that_stops_reading_stops_the_upstream_read() -> None:
    window = 64
    tokens = 100_000
    async with (
        mock_server() as server,
        running_engine(server, request_window_events=window, update_char_limit=1) as engine,
    ):
        req = request("text", tokens=tokens, seed=1)
        stream = engine.submit(req)
        text = ""
        async for event in stream:
            if isinstance(event, TextDelta):
                text += event.text
                if len(text) > 200:
                    break  # the consumer stops reading (without closing)

        def stalled() -> bool:
            stats = engine.statistics()
            return stats.flow.fetchers_waiting_credit == 1

        await wait_until(stalled)
        stats = engine.statistics()
        outbox = stats.channels["request.outbox"]
        # The chain filled up to the fetcher, which now waits to send more.
        assert stats.flow.credits_in_flight > window - 8
        assert stats.flow.credits_in_flight <= window
        assert outbox.current_buffer_used >= 1
        assert outbox.current_buffer_used <= outbox.max_buffer_size
        # Shared stages are empty: one slow consumer blocks nobody else.
        for name in ("fetch.out", "parse.out", "reorder.out", "batch.out"):
            assert stats.channels[name].current_buffer_used == 0, name

        # The server cannot write the whole stream: TCP flow control holds it.
        await wait_until(lambda: _sent(server) is not None)
        before = _sent(server)
        for _ in range(50):
            await trio.sleep(0.01)
            assert engine.statistics().flow.credits_in_flight <= window
        after = _sent(server)
        assert after is not None and before is not None
        assert after < tokens, "the server wrote everything: nothing pushed back"

        # Reading again resumes the stream (the server writes again), and
        # nothing was lost or repeated: what arrived is a prefix of the plan.
        async for event in stream:
            if isinstance(event, TextDelta):
                text += event.text
            sent = _sent(server)
            if sent is not None and sent > after + 2_000:
                break
        assert plan("text", metadata(req)).text.startswith(text)
        assert len(text) > 200
        await stream.aclose()


def _sent(server: object) -> int | None:
    events = server.stats.active_stream_events  # type: ignore[attr-defined]
    return next(iter(events.values()), None)


async def test_closing_the_stream_cancels_the_upstream_request_promptly() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        stream = engine.submit(request("text", tokens=100_000, tps=2000))
        async for event in stream:
            if isinstance(event, TextDelta):
                break
        await stream.aclose()
        with trio.fail_after(5):
            await wait_until(lambda: server.stats.streams_active == 0)
            await wait_until(lambda: engine.statistics().flow.open_requests == 0)
        stats = engine.statistics()
        assert stats.admission.in_flight == 0
        assert stats.endings == {"cancelled": 1}
        assert stats.actors["fetcher"]["cancelled"] == 1


async def test_engine_cancel_reports_the_reason() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        stream = engine.submit(request("stall", stall_after=3))
        await wait_until(lambda: server.stats.streams_active == 1)
        assert engine.cancel(stream.request_id, "user pressed stop")
        got = await collect(stream)
        assert not engine.cancel(stream.request_id, "again")
    assert isinstance(got.ending, Cancelled)
    assert got.ending.reason == "user pressed stop"


async def test_the_engine_side_deadline_ends_an_abandoned_request() -> None:
    async with mock_server() as server, running_engine(server, request_deadline_s=0.3) as engine:
        got = await collect(engine.submit(request("stall", stall_after=2)))
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, RequestDeadlineExceeded)
