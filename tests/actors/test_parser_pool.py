"""The parser pool: N workers, every seq accounted for, clones' originals closed."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from orpipe.actors.parser import parser_pool
from orpipe.engine.pipeline_messages import (
    DeltaEvent,
    ParsedBatch,
    ParseFailed,
    ParseOut,
    SseBatch,
    StreamEnded,
    UpstreamEvent,
)
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import delta, tasks_named

GOOD = delta("hi").encode()
OTHER = b'{"type":"response.in_progress","sequence_number":1}'
BAD = [b"{broken", b"\xff\xfe", b"[1]", b'{"no":"type"}']


def _open(workers: int, out_size: int = 100):
    send, receive = trio.open_memory_channel[SseBatch | StreamEnded](0)
    out_send, out_receive = trio.open_memory_channel[tuple[ParseOut, ...]](out_size)
    counters = ActorCounters()
    pool = functools.partial(parser_pool, receive, out_send, workers=workers, counters=counters)
    return send, receive, out_send, out_receive, counters, pool


async def _collect(out_receive: trio.MemoryReceiveChannel[tuple[ParseOut, ...]]) -> list[ParseOut]:
    flat: list[ParseOut] = []
    async for bundle in out_receive:
        assert isinstance(bundle, tuple) and bundle
        flat.extend(bundle)
    return flat


async def test_every_sequence_number_comes_out(autojump_clock: trio.testing.MockClock) -> None:
    send, _, _, out_receive, counters, pool = _open(workers=3, out_size=0)
    sent: dict[str, int] = {}
    bad_seqs: dict[str, set[int]] = {"a": set(), "b": set()}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool, name="pool of parsers")
            results: list[ParseOut] = []

            async def consume() -> None:
                results.extend(await _collect(out_receive))

            nursery.start_soon(consume)
            async with send:
                for round_ in range(6):
                    for rid in ("a", "b"):
                        first = sent.get(rid, 0)
                        payloads = [GOOD, OTHER, BAD[round_ % len(BAD)], GOOD][: 1 + round_ % 4]
                        for i, payload in enumerate(payloads):
                            if payload in BAD:
                                bad_seqs[rid].add(first + i)
                        await send.send(
                            SseBatch(request_id=rid, first_seq=first, payloads=tuple(payloads))
                        )
                        sent[rid] = first + len(payloads)
                for rid, total in sent.items():
                    await send.send(StreamEnded(request_id=rid, seq=total))
    # The outbox closed (consume() saw the end) once every worker ended.
    for rid, total in sent.items():
        items = [
            item
            for message in results
            if isinstance(message, ParsedBatch) and message.request_id == rid
            for item in message.items
        ]
        assert sorted(item.seq for item in items) == list(range(total))
        for item in items:
            if item.seq in bad_seqs[rid]:
                assert isinstance(item, ParseFailed)
            else:
                assert isinstance(item, DeltaEvent | UpstreamEvent)
        for message in results:
            if isinstance(message, ParsedBatch):
                assert [i.seq for i in message.items] == list(
                    range(message.first_seq, message.first_seq + len(message.items))
                )
        endings = [m for m in results if isinstance(m, StreamEnded) and m.request_id == rid]
        assert endings == [StreamEnded(request_id=rid, seq=total)]
    snapshot = counters.snapshot()
    assert snapshot["events"] == sum(sent.values())
    assert snapshot["parse_failed"] == sum(len(s) for s in bad_seqs.values())
    assert snapshot["bundles"] >= 1


async def test_originals_are_closed_after_cloning() -> None:
    send, receive, out_send, out_receive, _, pool = _open(workers=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool, name="pool of parsers")
        with pytest.raises(trio.ClosedResourceError):
            receive.receive_nowait()
        with pytest.raises(trio.ClosedResourceError):
            out_send.send_nowait(())
        assert send.statistics().open_receive_channels == 4
        assert out_receive.statistics().open_send_channels == 4
        assert len(tasks_named("parser-")) == 4
        await send.aclose()
    with pytest.raises(trio.EndOfChannel):
        out_receive.receive_nowait()
    assert not tasks_named("parser-")


async def test_pool_ends_only_when_every_clone_ended() -> None:
    send, _, _, out_receive, _, pool = _open(workers=2, out_size=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool, name="pool of parsers")
        for rid in ("a", "b"):
            await send.send(SseBatch(request_id=rid, first_seq=0, payloads=(GOOD,)))
            await trio.testing.wait_all_tasks_blocked()
        # Both workers hold a bundle and wait to send it; the inbox ends now.
        await send.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert out_receive.statistics().open_send_channels == 2
        first = await out_receive.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert out_receive.statistics().open_send_channels == 1  # one worker ended
        second = await out_receive.receive()  # not EndOfChannel: a clone is still open
        assert {first[0].request_id, second[0].request_id} == {"a", "b"}
        with pytest.raises(trio.EndOfChannel):
            await out_receive.receive()


async def test_inbox_ending_closes_the_outbox_with_nothing_sent() -> None:
    send, _, _, out_receive, counters, pool = _open(workers=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool, name="pool of parsers")
        await send.aclose()
        with trio.fail_after(1):
            with pytest.raises(trio.EndOfChannel):
                await out_receive.receive()
    assert counters.snapshot() == {}


async def test_cancellation_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    send, _, _, out_receive, _, pool = _open(workers=3, out_size=0)
    nurseries_before = list(trio.lowlevel.current_task().child_nurseries)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool, name="pool of parsers")
            for seq in range(3):
                await send.send(SseBatch(request_id="r", first_seq=seq, payloads=(GOOD,)))
                await trio.testing.wait_all_tasks_blocked()
            assert len(tasks_named("parser-")) == 3  # the workers
            assert len(tasks_named("pool of parsers")) == 1
            nursery.cancel_scope.cancel()  # mid-stream: every worker is blocked sending
    assert nursery.cancel_scope.cancelled_caught
    assert not nursery.child_tasks
    assert not tasks_named("parser")
    assert trio.lowlevel.current_task().child_nurseries == nurseries_before
    # The pool's channel ends were closed on the way out.
    assert out_receive.statistics().open_send_channels == 0
    assert send.statistics().open_receive_channels == 0
