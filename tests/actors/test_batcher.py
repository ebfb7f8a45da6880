"""The delta batcher actor: merging, pass-through, idle flush on a MockClock."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from orpipe.actors.batcher import delta_batcher
from orpipe.engine.config import EngineConfig
from orpipe.engine.pipeline_messages import (
    BatchOut,
    DeltaEvent,
    ParsedBatch,
    ParseOut,
    RequestBatch,
    StreamEnded,
    StreamItem,
    TextRun,
    TurnStarted,
    UpstreamEvent,
)
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import tasks_named


def _d(seq: int, text: str, channel: str = "text") -> DeltaEvent:
    return DeltaEvent(seq=seq, channel=channel, text=text)  # type: ignore[arg-type]


def _pb(rid: str, *items: StreamItem) -> ParsedBatch:
    return ParsedBatch(request_id=rid, first_seq=items[0].seq if items else 0, items=items)


def _run(rid: str, text: str, events: int, channel: str = "text") -> TextRun:
    return TextRun(request_id=rid, channel=channel, text=text, events=events)  # type: ignore[arg-type]


def _open(out_size: int = 100, **config: object):
    """The actor; merging is studied with the first text's early flush off unless asked."""
    config.setdefault("first_text_at_once", False)
    send, receive = trio.open_memory_channel[tuple[ParseOut, ...]](100)
    out_send, out_receive = trio.open_memory_channel[tuple[BatchOut, ...]](out_size)
    counters = ActorCounters()
    actor = functools.partial(
        delta_batcher,
        receive,
        out_send,
        config=EngineConfig(**config),  # type: ignore[arg-type]
        counters=counters,
    )
    return send, out_receive, counters, actor


def _flat(bundles: list[tuple[BatchOut, ...]]) -> list[BatchOut]:
    return [m for b in bundles for m in b]


async def test_merges_deltas_and_passes_other_items(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, out_receive, _, actor = _open(update_char_limit=5, idle_flush_ms=0)
    event = UpstreamEvent(seq=4, type="response.output_item.done", data={})
    ended = StreamEnded(request_id="r", seq=7)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        async with send:
            await send.send((_pb("r", _d(0, "ab"), _d(1, "cd"), _d(2, "ef"), _d(3, "g")),))
            await send.send((_pb("r", event, _d(5, "think", "reasoning"), _d(6, "!")), ended))
        bundles = [b async for b in out_receive]  # ends: the outbox was closed
    assert _flat(bundles) == [
        RequestBatch(request_id="r", items=(_run("r", "abcdef", 3),)),
        RequestBatch(
            request_id="r",
            items=(_run("r", "g", 1), event, _run("r", "think", 1, "reasoning")),
        ),
        RequestBatch(request_id="r", items=(_run("r", "!", 1),)),
        ended,
    ]


async def test_requests_are_batched_independently(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, out_receive, _, actor = _open(update_char_limit=100, idle_flush_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        await send.send((_pb("a", _d(0, "aa")), _pb("b", _d(0, "bb"))))
        await send.send((StreamEnded(request_id="a", seq=1),))
        with trio.fail_after(1):
            bundle = await out_receive.receive()
        assert bundle == (
            RequestBatch(request_id="a", items=(_run("a", "aa", 1),)),
            StreamEnded(request_id="a", seq=1),
        )
        await send.send((StreamEnded(request_id="b", seq=1),))
        with trio.fail_after(1):
            assert (await out_receive.receive())[0] == RequestBatch(
                request_id="b", items=(_run("b", "bb", 1),)
            )
        await send.aclose()


async def test_idle_flush_after_idle_flush_ms(autojump_clock: trio.testing.MockClock) -> None:
    send, out_receive, counters, actor = _open(update_char_limit=100, idle_flush_ms=250)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        start = trio.current_time()
        await send.send((_pb("r", _d(0, "he")),))
        await trio.testing.wait_all_tasks_blocked()
        await send.send((_pb("r", _d(1, "llo")),))  # a trickle does not postpone the flush
        bundle = await out_receive.receive()
        assert trio.current_time() - start == pytest.approx(0.25)
        assert bundle == (RequestBatch(request_id="r", items=(_run("r", "hello", 2),)),)
        assert counters.snapshot()["idle_flushes"] == 1
        # A new run starts a new timer.
        await send.send((_pb("r", _d(2, "again")),))
        restart = trio.current_time()
        bundle = await out_receive.receive()
        assert trio.current_time() - restart == pytest.approx(0.25)
        assert bundle == (RequestBatch(request_id="r", items=(_run("r", "again", 1),)),)
        await send.aclose()


async def test_idle_flush_holds_back_a_half_pair(autojump_clock: trio.testing.MockClock) -> None:
    send, out_receive, _, actor = _open(update_char_limit=100, idle_flush_ms=100)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        await send.send((_pb("r", _d(0, "ok\ud83d")),))
        assert await out_receive.receive() == (
            RequestBatch(request_id="r", items=(_run("r", "ok", 1),)),
        )
        await send.send((_pb("r", _d(1, "\ude00")), StreamEnded(request_id="r", seq=2)))
        assert await out_receive.receive() == (
            RequestBatch(request_id="r", items=(_run("r", "😀", 1),)),
            StreamEnded(request_id="r", seq=2),
        )
        await send.aclose()


async def test_zero_idle_flush_ms_disables_the_timer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, out_receive, counters, actor = _open(update_char_limit=100, idle_flush_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        await send.send((_pb("r", _d(0, "quiet")),))
        with trio.move_on_after(3600) as waited:
            await out_receive.receive()
        assert waited.cancelled_caught  # an hour of mock time: nothing was flushed
        await send.send((StreamEnded(request_id="r", seq=1),))
        assert await out_receive.receive() == (
            RequestBatch(request_id="r", items=(_run("r", "quiet", 1),)),
            StreamEnded(request_id="r", seq=1),
        )
        assert "idle_flushes" not in counters.snapshot()
        await send.aclose()


async def test_empty_delta_survives_the_idle_flush(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, out_receive, _, actor = _open(update_char_limit=100, idle_flush_ms=50)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        await send.send((_pb("r", _d(0, "")),))  # {"delta": ""} from the provider
        await trio.sleep(1)  # the idle timer fires
        await send.send((StreamEnded(request_id="r", seq=1),))
        bundles = []
        await send.aclose()
        async for bundle in out_receive:
            bundles.append(bundle)
        assert _flat(bundles)[-1] == StreamEnded(request_id="r", seq=1)


async def test_inbox_end_closes_the_outbox(autojump_clock: trio.testing.MockClock) -> None:
    send, out_receive, _, actor = _open()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        await send.send((_pb("r", _d(0, "pending")),))  # an idle timer is armed
        await send.aclose()
        with trio.fail_after(1):
            bundles = [b async for b in out_receive]
    assert len(bundles) <= 1  # at most the idle flush, then the end
    assert not tasks_named("batcher-actor")


async def test_cancellation_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    send, out_receive, _, actor = _open(out_size=0, update_char_limit=1, idle_flush_ms=10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor, name="batcher-actor")
            await send.send((_pb("r", _d(0, "a")),))
            await send.send((_pb("r", _d(1, "b")),))
            await trio.testing.wait_all_tasks_blocked()
            assert out_receive.statistics().tasks_waiting_send == 1  # mid-stream
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    assert not tasks_named("batcher-actor")
    assert out_receive.statistics().open_send_channels == 0
    assert send.statistics().open_receive_channels == 0


async def test_a_request_may_carry_its_own_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A user's streaming profile: one request batches by 2 chars, its neighbour by the config."""
    from orpipe.engine.channels import ChannelRegistry  # noqa: PLC0415
    from orpipe.engine.messages import ChatRequest  # noqa: PLC0415
    from orpipe.engine.request import RequestHandle  # noqa: PLC0415

    own = ChatRequest(model="m", input=(), request_id="own", update_char_limit=2, idle_flush_ms=0)
    handle = RequestHandle(
        own,
        window_events=16,
        deadline=float("inf"),
        channels=ChannelRegistry(),
        on_finished=lambda *_: None,
    )
    send, out_receive, _, actor = _open(update_char_limit=100, idle_flush_ms=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        async with send:
            await send.send((TurnStarted(handle),))  # as the fetcher announces a turn
            await send.send((_pb("own", _d(0, "ab"), _d(1, "cd")),))
            await send.send((_pb("other", _d(0, "ab"), _d(1, "cd")),))
            await send.send((StreamEnded(request_id="own", seq=2),))
            await send.send((StreamEnded(request_id="other", seq=2),))
        bundles = [b async for b in out_receive]
    runs = [m for m in _flat(bundles) if isinstance(m, RequestBatch)]
    assert [item for m in runs if m.request_id == "own" for item in m.items] == [
        _run("own", "ab", 1),
        _run("own", "cd", 1),
    ]
    assert [item for m in runs if m.request_id == "other" for item in m.items] == [
        _run("other", "abcd", 2)
    ]


def test_request_limits_are_validated() -> None:
    from orpipe.engine.errors import UsageError  # noqa: PLC0415
    from orpipe.engine.messages import ChatRequest  # noqa: PLC0415

    with pytest.raises(UsageError, match="update_char_limit"):
        ChatRequest(model="m", input=(), update_char_limit=0)
    with pytest.raises(UsageError, match="idle_flush_ms"):
        ChatRequest(model="m", input=(), idle_flush_ms=-1)


async def test_the_first_text_of_each_channel_goes_out_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, out_receive, _, actor = _open(
        update_char_limit=100, idle_flush_ms=250, first_text_at_once=True
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="batcher-actor")
        start = trio.current_time()
        await send.send((_pb("r", _d(0, "hm", "reasoning")),))
        assert await out_receive.receive() == (
            RequestBatch(request_id="r", items=(_run("r", "hm", 1, "reasoning"),)),
        )
        await send.send((_pb("r", _d(1, "He"), _d(2, "llo"), _d(3, " there")),))
        assert await out_receive.receive() == (
            RequestBatch(request_id="r", items=(_run("r", "He", 1),)),
        )
        assert trio.current_time() == start  # neither waited for the idle flush
        # What follows is batched again: the idle flush brings the rest.
        assert await out_receive.receive() == (
            RequestBatch(request_id="r", items=(_run("r", "llo there", 2),)),
        )
        assert trio.current_time() - start == pytest.approx(0.25)
        await send.aclose()
