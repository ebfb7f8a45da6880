"""The reorderer actor: per-request order restored, outbox closed, clean cancellation."""

from __future__ import annotations

import functools
import random

import pytest
import trio
import trio.testing

from orpipe.actors.event_decoder import decode_event
from orpipe.actors.reorderer import reorderer
from orpipe.engine.config import EngineConfig
from orpipe.engine.pipeline_messages import ParsedBatch, ParseOut, StreamEnded
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import delta, tasks_named


def _batch(rid: str, first: int, count: int, *, bad: bool = False) -> ParsedBatch:
    payload = b"{oops" if bad else delta("x").encode()
    items = tuple(decode_event(first + i, payload) for i in range(count))
    return ParsedBatch(request_id=rid, first_seq=first, items=items)


def _open(out_size: int = 100, window: int = 64):
    send, receive = trio.open_memory_channel[tuple[ParseOut, ...]](100)
    out_send, out_receive = trio.open_memory_channel[tuple[ParsedBatch | StreamEnded, ...]](
        out_size
    )
    counters = ActorCounters()
    actor = functools.partial(
        reorderer,
        receive,
        out_send,
        config=EngineConfig(request_window_events=window),
        counters=counters,
    )
    return send, out_receive, counters, actor


async def test_order_is_restored_per_request() -> None:
    send, out_receive, counters, actor = _open()
    a = [_batch("a", 0, 2), _batch("a", 2, 1, bad=True), _batch("a", 3, 3)]
    a_end = StreamEnded(request_id="a", seq=6)
    b = [_batch("b", 0, 1), _batch("b", 1, 4)]
    b_end = StreamEnded(request_id="b", seq=5, cancel_reason="gone")
    messages: list[ParseOut] = [*a, a_end, *b, b_end]
    random.Random(7).shuffle(messages)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="reorderer-actor")
        async with send:
            for i in range(0, len(messages), 2):  # bundles of two, like the parser sends
                await send.send(tuple(messages[i : i + 2]))
        released: list[ParsedBatch | StreamEnded] = []
        with trio.fail_after(1):
            async for bundle in out_receive:  # ends: the outbox was closed
                released.extend(bundle)
    assert [m for m in released if m.request_id == "a"] == [*a, a_end]
    assert [m for m in released if m.request_id == "b"] == [*b, b_end]
    assert counters.snapshot().get("held_out_of_order", 0) >= 1


async def test_parse_failures_fill_gaps() -> None:
    send, out_receive, _, actor = _open()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="reorderer-actor")
        await send.send((_batch("r", 1, 1), StreamEnded(request_id="r", seq=2)))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            out_receive.receive_nowait()  # seq 0 is missing: everything is held
        failed = _batch("r", 0, 1, bad=True)
        await send.send((failed,))
        with trio.fail_after(1):
            bundle = await out_receive.receive()
        assert bundle == (failed, _batch("r", 1, 1), StreamEnded(request_id="r", seq=2))
        await send.aclose()


async def test_a_request_with_only_an_ending() -> None:
    send, out_receive, _, actor = _open()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="reorderer-actor")
        ended = StreamEnded(request_id="r", seq=0)
        await send.send((ended,))
        with trio.fail_after(1):
            assert await out_receive.receive() == (ended,)
        await send.aclose()
        with trio.fail_after(1), pytest.raises(trio.EndOfChannel):
            await out_receive.receive()


async def test_inbox_end_closes_the_outbox_even_with_held_items() -> None:
    send, out_receive, _, actor = _open()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="reorderer-actor")
        await send.send((_batch("r", 3, 1),))  # held forever: its gap never fills
        await send.aclose()
        with trio.fail_after(1), pytest.raises(trio.EndOfChannel):
            await out_receive.receive()


async def test_cancellation_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    send, out_receive, _, actor = _open(out_size=0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor, name="reorderer-actor")
            await send.send((_batch("r", 0, 1),))
            await send.send((_batch("r", 1, 1),))
            await trio.testing.wait_all_tasks_blocked()  # blocked sending downstream
            assert out_receive.statistics().tasks_waiting_send == 1
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    assert not tasks_named("reorderer-actor")
    assert out_receive.statistics().open_send_channels == 0
    assert send.statistics().open_receive_channels == 0
