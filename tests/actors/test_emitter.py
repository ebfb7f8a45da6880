"""The emitter: deliveries into RequestHandle outboxes, credits, endings via finish."""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from orpipe.actors.emitter import emitter
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import UpstreamTimeout
from orpipe.engine.messages import (
    Cancelled,
    ChatRequest,
    Completed,
    Failed,
    Notice,
    OutboundBatch,
    TextDelta,
    Usage,
)
from orpipe.engine.pipeline_messages import (
    BatchOut,
    ParseFailed,
    RequestBatch,
    StreamEnded,
    TextRun,
    ToolRound,
    TurnStarted,
    UpstreamEvent,
)
from orpipe.engine.request import RequestHandle, ResponseStream
from orpipe.engine.statistics import ActorCounters
from orpipe.engine.tools import Tool, toolbox
from tests.actors.fakes import Finished, drain_outbound, make_handle, tasks_named


def _run(rid: str, text: str, events: int) -> TextRun:
    return TextRun(request_id=rid, channel="text", text=text, events=events)


def _ev(kind: str, **data: object) -> UpstreamEvent:
    return UpstreamEvent(seq=0, type=kind, data={"type": kind, **data})


def _open(requests: dict[str, RequestHandle]):
    send, receive = trio.open_memory_channel[tuple[BatchOut, ...]](100)
    _announce(send, requests)
    counters = ActorCounters()
    actor = functools.partial(emitter, receive, config=EngineConfig(), counters=counters)
    return send, counters, actor


def _announce(
    send: trio.MemorySendChannel[tuple[BatchOut, ...]], requests: dict[str, RequestHandle]
) -> None:
    """Each request's turn starts, as the fetcher announces it, before any of its items."""
    for handle in requests.values():
        send.send_nowait((TurnStarted(handle),))


async def test_deliveries_credits_and_the_ending() -> None:
    finished = Finished()
    handle = make_handle(window_events=8, finished=finished)
    rid = handle.request_id
    await handle.window.acquire(6)  # what the fetcher took for six upstream events
    send, counters, actor = _open({rid: handle})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        # A run of two deltas and a quiet event: one batch, three credits.
        await send.send(
            (
                RequestBatch(
                    request_id=rid, items=(_run(rid, "Hel", 2), _ev("response.in_progress"))
                ),
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert drain_outbound(handle) == [
            OutboundBatch(events=(TextDelta(request_id=rid, text="Hel"),), credits=3)
        ]
        handle.window.release(3)  # the consumer took it
        assert handle.window.in_flight == 3
        # Events with no outbound effect give their credits back at once.
        await send.send(
            (
                RequestBatch(
                    request_id=rid,
                    items=(_ev("response.output_text.done"), _ev("response.content_part.done")),
                ),
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert drain_outbound(handle) == []
        assert handle.window.in_flight == 1
        usage = {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}
        completed = _ev("response.completed", response={"id": "resp_1", "usage": usage})
        await send.send(
            (RequestBatch(request_id=rid, items=(completed,)), StreamEnded(request_id=rid, seq=6))
        )
        await trio.testing.wait_all_tasks_blocked()
        ending = Completed(request_id=rid, response_id="resp_1", text_chars=3)
        assert drain_outbound(handle) == [
            OutboundBatch(
                events=(Usage(request_id=rid, input_tokens=2, output_tokens=3, total_tokens=5),),
                credits=1,
            ),
            OutboundBatch(events=(ending,), credits=0),
        ]
        assert handle.finished
        assert finished.endings == [(handle, ending)]
        with pytest.raises(trio.EndOfChannel):
            handle.outbox_receive.receive_nowait()  # finish() closed the request's outbox
        await send.aclose()
    snapshot = counters.snapshot()
    assert snapshot["ending_completed"] == 1
    assert snapshot["events"] == 1


async def test_a_consumer_reads_it_through_response_stream() -> None:
    handle = make_handle(window_events=4)
    rid = handle.request_id
    send, _, actor = _open({rid: handle})
    cancels: list[tuple[str, str]] = []
    stream = ResponseStream(handle, lambda r, why: cancels.append((r, why)))
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await handle.window.acquire(3)
        await send.send(
            (
                RequestBatch(request_id=rid, items=(_run(rid, "a", 1), _run(rid, "b", 1))),
                RequestBatch(request_id=rid, items=(ParseFailed(seq=2, reason="bad", size=1),)),
                StreamEnded(request_id=rid, seq=3, failure=UpstreamTimeout("idle read", 300)),
            )
        )
        events = [event async for event in stream]
        await send.aclose()
    assert [type(e).__name__ for e in events] == ["TextDelta", "TextDelta", "Notice", "Failed"]
    assert isinstance(stream.ending, Failed)
    assert "2 characters" in stream.ending.message
    assert handle.window.in_flight == 0  # every credit came back
    assert cancels == []


async def test_credit_less_events_wait_for_the_next_delivery() -> None:
    handle = make_handle(window_events=4)
    rid = handle.request_id
    send, _, actor = _open({rid: handle})
    await handle.window.acquire(1)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        # A run of zero events (a stray half pair made whole): nothing to pay with.
        await send.send((RequestBatch(request_id=rid, items=(_run(rid, "\ufffd", 0),)),))
        await trio.testing.wait_all_tasks_blocked()
        assert drain_outbound(handle) == []
        await send.send((RequestBatch(request_id=rid, items=(_run(rid, "x", 1),)),))
        await trio.testing.wait_all_tasks_blocked()
        assert drain_outbound(handle) == [
            OutboundBatch(
                events=(
                    TextDelta(request_id=rid, text="\ufffd"),
                    TextDelta(request_id=rid, text="x"),
                ),
                credits=1,
            )
        ]
        await send.aclose()


async def test_cancelled_ending_and_unknown_requests() -> None:
    handle = make_handle()
    rid = handle.request_id
    send, counters, actor = _open({rid: handle})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.send(
            (
                RequestBatch(request_id="ghost", items=(_ev("response.in_progress"),)),
                StreamEnded(request_id="ghost", seq=1),
                StreamEnded(request_id=rid, seq=0, cancel_reason="client left"),
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert drain_outbound(handle) == [
            OutboundBatch(events=(Cancelled(request_id=rid, reason="client left"),), credits=0)
        ]
        await send.aclose()
    snapshot = counters.snapshot()
    assert snapshot["ending_cancelled"] == 1
    assert snapshot["ending_failed"] == 1  # the ghost: no terminal event


async def test_unknown_event_types_are_counted() -> None:
    handle = make_handle()
    rid = handle.request_id
    await handle.window.acquire(2)
    send, counters, actor = _open({rid: handle})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.send(
            (
                RequestBatch(
                    request_id=rid, items=(_ev("response.brand_new"), _ev("response.brand_new"))
                ),
                StreamEnded(request_id=rid, seq=2),
            )
        )
        await send.aclose()
    assert counters.snapshot()["unknown_events"] == 2
    batches = drain_outbound(handle)
    # Effect-less events give their credits straight back; only the ending is delivered.
    assert handle.window.in_flight == 0
    assert [b.credits for b in batches] == [0]
    assert isinstance(batches[0].events[0], Failed)


async def test_inbox_end_ends_the_emitter() -> None:
    send, _, actor = _open({})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.aclose()
        with trio.fail_after(1):
            while tasks_named("emitter-actor"):
                await trio.testing.wait_all_tasks_blocked()
                await trio.lowlevel.checkpoint()
    assert send.statistics().open_receive_channels == 0  # it closed its inbox


async def test_cancellation_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    handle = make_handle()
    rid = handle.request_id
    await handle.window.acquire(1)
    send, _, actor = _open({rid: handle})
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor, name="emitter-actor")
            await send.send((RequestBatch(request_id=rid, items=(_run(rid, "a", 1),)),))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()  # mid-request: no ending delivered yet
    assert nursery.cancel_scope.cancelled_caught
    assert not tasks_named("emitter-actor")
    assert send.statistics().open_receive_channels == 0
    assert not handle.finished  # the engine's finaliser ends it, not the emitter


# --- the tool loop ------------------------------------------------------------------


def _tool_rig(requests: dict[str, RequestHandle], **config: object):  # type: ignore[no-untyped-def]
    send, receive = trio.open_memory_channel[tuple[BatchOut, ...]](100)
    _announce(send, requests)
    tools_send, tools_receive = trio.open_memory_channel[ToolRound](10)
    counters = ActorCounters()
    actor = functools.partial(
        emitter,
        receive,
        None,
        tools_send,
        config=EngineConfig(**config),  # type: ignore[arg-type]
        counters=counters,
    )
    return send, tools_receive, counters, actor


def _call_done(call_id: str) -> UpstreamEvent:
    item = {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": "get_weather",
        "arguments": "{}",
    }
    return _ev("response.output_item.done", item=item)


def _turn(rid: str, *items: UpstreamEvent, turn: int = 0) -> tuple[BatchOut, ...]:
    completed = _ev("response.completed", response={"id": f"resp_{turn}"})
    return (
        RequestBatch(request_id=rid, items=(*items, completed)),
        StreamEnded(request_id=rid, seq=len(items) + 1, turn=turn),
    )


def _tool_request() -> ChatRequest:
    async def noop(args: dict[str, object]) -> str:
        return ""

    return ChatRequest(model="m", input=(), tools=toolbox(Tool(name="get_weather", function=noop)))


async def test_a_turn_with_calls_goes_to_the_tool_executor_without_ending() -> None:
    handle = make_handle(window_events=16, request=_tool_request())
    rid = handle.request_id
    await handle.window.acquire(3)
    send, rounds, counters, actor = _tool_rig({rid: handle})
    message = {"type": "message", "role": "assistant", "content": []}
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.send(
            _turn(rid, _ev("response.output_item.done", item=message), _call_done("c1"))
        )
        tool_round = await rounds.receive()
        assert not handle.finished
        assert tool_round.turn == 0
        assert [c["call_id"] for c in tool_round.calls] == ["c1"]
        # Every output item of the turn (the message too) goes back next turn, in order.
        assert [i["type"] for i in tool_round.output] == ["message", "function_call"]
        delivered = [e for b in drain_outbound(handle) for e in b.events]
        assert [type(e).__name__ for e in delivered] == ["OutputItem"]
        # The next turn answers in text: now the request ends.
        await send.send(_turn(rid, _ev("response.output_text.delta", delta="x"), turn=1))
        await trio.testing.wait_all_tasks_blocked()
        assert handle.finished
        await send.aclose()
    assert counters.snapshot()["tool_rounds"] == 1


async def test_the_turn_limit_ends_the_request_with_a_notice() -> None:
    handle = make_handle(window_events=16, request=_tool_request())
    rid = handle.request_id
    await handle.window.acquire(2)
    send, rounds, counters, actor = _tool_rig({rid: handle}, max_function_call_loops=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.send(_turn(rid, _call_done("c9"), turn=2))  # the third turn
        await trio.testing.wait_all_tasks_blocked()
        assert handle.finished
        with pytest.raises(trio.WouldBlock):
            rounds.receive_nowait()
        events = [e for b in drain_outbound(handle) for e in b.events]
        await send.aclose()
    notice = next(e for e in events if isinstance(e, Notice))
    assert "limit (max_function_call_loops = 3)" in notice.message
    assert "get_weather" in notice.message
    assert any(isinstance(e, TextDelta) and "limit" in e.text for e in events)
    assert isinstance(events[-1], Completed)
    assert counters.snapshot()["turn_limit_reached"] == 1


async def test_calls_of_a_request_without_tools_are_only_reported() -> None:
    handle = make_handle(window_events=16)
    rid = handle.request_id
    await handle.window.acquire(2)
    send, rounds, _, actor = _tool_rig({rid: handle})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.send(_turn(rid, _call_done("c1")))
        await trio.testing.wait_all_tasks_blocked()
        assert handle.finished
        with pytest.raises(trio.WouldBlock):
            rounds.receive_nowait()
        await send.aclose()


async def test_creditless_closing_events_travel_with_the_round() -> None:
    handle = make_handle(window_events=16, request=_tool_request())
    rid = handle.request_id
    await handle.window.acquire(3)
    send, rounds, _, actor = _tool_rig({rid: handle})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        searching = _ev("response.web_search_call.in_progress")
        # Everything but the StreamEnded arrives first and is delivered with its credits.
        await send.send(
            (
                RequestBatch(
                    request_id=rid,
                    items=(
                        searching,
                        _call_done("c1"),
                        _ev("response.completed", response={"id": "r"}),
                    ),
                ),
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        drain_outbound(handle)
        # The ending then closes the search status: no credit left to carry it.
        await send.send((StreamEnded(request_id=rid, seq=3),))
        tool_round = await rounds.receive()
        await send.aclose()
    assert [type(e).__name__ for e in tool_round.carried] == ["Status"]
    assert drain_outbound(handle) == []


async def test_a_completed_turn_cut_by_a_cancellation_starts_no_round() -> None:
    # response.completed (with calls) arrived, then the stream was cancelled:
    # the fetcher will not stream again, so no round may start.
    handle = make_handle(window_events=16, request=_tool_request())
    rid = handle.request_id
    await handle.window.acquire(2)
    send, rounds, _, actor = _tool_rig({rid: handle})
    completed = _ev("response.completed", response={"id": "r"})
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="emitter-actor")
        await send.send(
            (
                RequestBatch(request_id=rid, items=(_call_done("c1"), completed)),
                StreamEnded(request_id=rid, seq=2, cancel_reason="consumer left"),
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        assert handle.finished
        with pytest.raises(trio.WouldBlock):
            rounds.receive_nowait()
        await send.aclose()
