"""The fetcher with a scripted transport: framing, retries, timeouts, cancellation, credits."""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from orpipe.actors.retry_policy import RetryPolicy
from orpipe.actors.upstream_fetcher import upstream_fetcher
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import (
    RequestDeadlineExceeded,
    UpstreamConnectError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from orpipe.engine.messages import ChatRequest, Completed, NextTurn, ToolsStopped
from orpipe.engine.pipeline_messages import FetchOut, SseBatch, StreamEnded
from orpipe.engine.ports import EnginePorts
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import (
    DONE,
    Attempt,
    FakeTransport,
    Stall,
    delta,
    make_handle,
    sse,
    tasks_named,
)

SEED = 1234
E = [delta(f"t{i}") for i in range(10)]
EB = [e.encode() for e in E]


def _envelope(status: int, message: str) -> bytes:
    return json.dumps({"error": {"code": status, "message": message}}).encode()


@dataclass
class Rig:
    config: EngineConfig
    transport: FakeTransport
    inbox: trio.MemorySendChannel[RequestHandle]
    outbox: trio.MemoryReceiveChannel[FetchOut]
    counters: ActorCounters

    async def collect(
        self, *handles: RequestHandle, give_credit: bool = True
    ) -> dict[str, list[FetchOut]]:
        """Messages per request until each one's StreamEnded, acting as the consumer."""
        by_id = {h.request_id: h for h in handles}
        out: dict[str, list[FetchOut]] = {rid: [] for rid in by_id}
        open_ids = set(by_id)
        while open_ids:
            message = await self.outbox.receive()
            out[message.request_id].append(message)
            if isinstance(message, StreamEnded):
                open_ids.discard(message.request_id)
                _end_like_the_emitter(by_id[message.request_id])
            elif give_credit:
                by_id[message.request_id].window.release(len(message.payloads))
        return out


def _end_like_the_emitter(handle: RequestHandle) -> None:
    """Finish the request, as the emitter does at a last turn: its fetch task stops waiting."""
    handle.outbox.finish(Completed(request_id=handle.request_id, response_id=None, text_chars=0))


@asynccontextmanager
async def fetcher_rig(
    attempts: list[Attempt], *, out_size: int = 100, **config: object
) -> AsyncIterator[Rig]:
    cfg = EngineConfig(**config)  # type: ignore[arg-type]
    transport = FakeTransport(attempts)
    in_send, in_receive = trio.open_memory_channel[RequestHandle](0)
    out_send, out_receive = trio.open_memory_channel[FetchOut](out_size)
    counters = ActorCounters()
    ports = EnginePorts(transport=transport, rng=random.Random(SEED))
    actor = functools.partial(
        upstream_fetcher, in_receive, out_send, config=cfg, ports=ports, counters=counters
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(actor, name="fetcher-actor")
        async with in_send:
            yield Rig(cfg, transport, in_send, out_receive, counters)


def _payloads(messages: list[FetchOut]) -> list[bytes]:
    return [p for m in messages if isinstance(m, SseBatch) for p in m.payloads]


def _ended(messages: list[FetchOut]) -> StreamEnded:
    assert isinstance(messages[-1], StreamEnded)
    assert not any(isinstance(m, StreamEnded) for m in messages[:-1])
    return messages[-1]


def _seqs_are_contiguous(messages: list[FetchOut]) -> None:
    seq = 0
    for m in messages:
        if isinstance(m, SseBatch):
            assert m.first_seq == seq
            seq += len(m.payloads)
    assert _ended(messages).seq == seq


# --- streaming ---------------------------------------------------------------


async def test_streams_events_in_numbered_batches(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = sse(E[0], E[1])
    chunks: list[bytes] = [
        b": OPENROUTER PROCESSING\n\n",
        body[:7],  # inside the first data line
        body[7:-1],  # ends the first event; the second lacks its blank line
        body[-1:] + sse(E[2]),
        DONE,
    ]
    request = ChatRequest(
        model="openai/gpt-5",
        input=({"type": "message", "role": "user", "content": "hi"},),
        options={"max_output_tokens": 50, "temperature": None},
    )
    async with fetcher_rig([Attempt(chunks=list(chunks))]) as rig:
        handle = make_handle(request=request)
        await rig.inbox.send(handle)
        got = (await rig.collect(handle, give_credit=False))[handle.request_id]
        assert handle.window.in_flight == 3  # one credit per forwarded event
        assert got == [
            SseBatch(request_id=handle.request_id, first_seq=0, payloads=(EB[0],)),
            SseBatch(request_id=handle.request_id, first_seq=1, payloads=(EB[1], EB[2])),
            StreamEnded(request_id=handle.request_id, seq=3),
        ]
        [(_, sent)] = rig.transport.calls
        assert json.loads(sent) == request.body()
        assert rig.transport.open_responses == 0
        assert rig.transport.iterators_open == 0
    with pytest.raises(trio.EndOfChannel):
        rig.outbox.receive_nowait()  # the inbox ended, so the outbox closed
    snapshot = rig.counters.snapshot()
    assert snapshot["requests"] == 1
    assert snapshot["events"] == 3
    assert snapshot["batches"] == 2
    assert snapshot["bytes"] == sum(len(c) for c in chunks)
    assert "failed" not in snapshot and "retries" not in snapshot


async def test_body_without_done_still_delivers_the_last_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), b"data: " + EB[1]])]) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    assert _payloads(got) == [EB[0], EB[1]]
    assert _ended(got) == StreamEnded(request_id=handle.request_id, seq=2)


async def test_concurrent_requests_number_their_own_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stall = Stall()
    attempts = [
        Attempt(chunks=[sse(E[0]), stall, sse(E[1]), DONE]),
        Attempt(chunks=[sse(E[5], E[6], E[7]), DONE]),
    ]
    async with fetcher_rig(attempts) as rig:
        a, b = make_handle(), make_handle()
        await rig.inbox.send(a)
        await stall.reached.wait()
        await rig.inbox.send(b)
        await trio.testing.wait_all_tasks_blocked()
        stall.resume.set()
        got = await rig.collect(a, b)
    assert _payloads(got[a.request_id]) == [EB[0], EB[1]]
    assert _payloads(got[b.request_id]) == [EB[5], EB[6], EB[7]]
    _seqs_are_contiguous(got[a.request_id])
    _seqs_are_contiguous(got[b.request_id])


async def test_outbox_closes_only_after_running_requests_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stall = Stall()
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), stall, DONE])]) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        await stall.reached.wait()
        await rig.inbox.aclose()  # intake ends while a request still streams
        first = await rig.outbox.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert rig.outbox.statistics().open_send_channels == 1
        with pytest.raises(trio.WouldBlock):
            rig.outbox.receive_nowait()
        stall.resume.set()
        assert isinstance(first, SseBatch)
        assert await rig.outbox.receive() == StreamEnded(request_id=handle.request_id, seq=1)
        _end_like_the_emitter(handle)
        with trio.fail_after(1), pytest.raises(trio.EndOfChannel):
            await rig.outbox.receive()
    assert not tasks_named("fetch")


# --- retries -------------------------------------------------------------------


async def test_retries_before_the_first_event_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors = [
        UpstreamHTTPError(503, code=503, detail="x"),
        UpstreamConnectError("connection refused"),
        UpstreamTimeout("connect", 10),
    ]
    attempts = [
        Attempt(status=503, body=_envelope(503, "No provider")),
        Attempt(enter_error=errors[1]),
        Attempt(enter_error=errors[2]),
        Attempt(chunks=[sse(E[0]), DONE]),
    ]
    config = {"retry_attempts": 3, "retry_backoff_initial_s": 1.0, "retry_backoff_max_s": 8.0}
    async with fetcher_rig(attempts, **config) as rig:
        handle = make_handle()
        start = trio.current_time()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    assert _payloads(got) == [EB[0]]
    assert _ended(got).failure is None
    policy = RetryPolicy.from_config(EngineConfig(**config))  # type: ignore[arg-type]
    rng = random.Random(SEED)
    expected = [policy.delay(i, error, rng) for i, error in enumerate(errors)]
    times = [t - start for t, _ in rig.transport.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == 0
    assert gaps == pytest.approx(expected)
    assert 0.5 <= gaps[0] <= 1.0 and 1.0 <= gaps[1] <= 2.0 and 2.0 <= gaps[2] <= 4.0
    snapshot = rig.counters.snapshot()
    assert snapshot["retries"] == 3
    assert snapshot["http_503"] == 1


async def test_gives_up_after_the_last_attempt(autojump_clock: trio.testing.MockClock) -> None:
    attempts = [Attempt(status=500, body=_envelope(500, f"boom {i}")) for i in range(3)]
    async with fetcher_rig(attempts, retry_attempts=2) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    ended = _ended(got)
    assert ended.seq == 0
    assert isinstance(ended.failure, UpstreamHTTPError)
    assert ended.failure.status == 500
    assert ended.failure.detail == "boom 2"
    assert len(rig.transport.calls) == 3
    assert rig.counters.snapshot()["failed"] == 1


@pytest.mark.parametrize(
    "error",
    [
        UpstreamProtocolError("OpenRouter closed the connection mid-stream; retry."),
        UpstreamTimeout("idle read", 300),
    ],
)
async def test_no_retry_after_the_first_event_was_forwarded(
    autojump_clock: trio.testing.MockClock, error: Exception
) -> None:
    attempts = [
        Attempt(chunks=[sse(E[0], E[1]), error]),  # type: ignore[list-item]
        Attempt(chunks=[sse(E[0], E[1], E[2]), DONE]),  # must never be asked for
    ]
    async with fetcher_rig(attempts, retry_attempts=5) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    assert _payloads(got) == [EB[0], EB[1]]  # text is never sent twice
    ended = _ended(got)
    assert ended.seq == 2
    assert ended.failure is error
    assert len(rig.transport.calls) == 1
    assert len(rig.transport.attempts) == 1
    assert "retries" not in rig.counters.snapshot()


async def test_retry_after_beyond_the_cap_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = [
        Attempt(status=429, headers={"retry-after": "120"}, body=_envelope(429, "slow down")),
        Attempt(chunks=[sse(E[0]), DONE]),
    ]
    async with fetcher_rig(attempts, retry_after_cap_s=30) as rig:
        handle = make_handle()
        start = trio.current_time()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
        assert trio.current_time() == start  # no waiting at all
    failure = _ended(got).failure
    assert isinstance(failure, UpstreamRateLimited)
    assert failure.retry_after_s == 120
    assert "retry in 120 s" in failure.message
    assert len(rig.transport.calls) == 1


async def test_retry_after_within_the_cap_is_waited_for(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = [
        Attempt(status=429, headers={"retry-after": "10"}, body=_envelope(429, "slow down")),
        Attempt(chunks=[sse(E[0]), DONE]),
    ]
    async with fetcher_rig(attempts, retry_after_cap_s=30, retry_backoff_initial_s=0.5) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    assert _payloads(got) == [EB[0]]
    (t0, _), (t1, _) = rig.transport.calls
    assert t1 - t0 == pytest.approx(10.0)


@pytest.mark.parametrize("status", [400, 401, 402, 403])
async def test_non_retryable_status_fails_at_once(
    autojump_clock: trio.testing.MockClock, status: int
) -> None:
    attempts = [Attempt(status=status, body=_envelope(status, "nope")), Attempt()]
    async with fetcher_rig(attempts, retry_attempts=5) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    failure = _ended(got).failure
    assert isinstance(failure, UpstreamHTTPError)
    assert (failure.status, failure.code, failure.detail) == (status, status, "nope")
    assert len(rig.transport.calls) == 1


async def test_error_body_is_read_with_a_limit(autojump_clock: trio.testing.MockClock) -> None:
    body = b"Not found: " + b"x" * 5000
    async with fetcher_rig([Attempt(status=404, body=body)], max_error_body_bytes=256) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    failure = _ended(got).failure
    assert isinstance(failure, UpstreamHTTPError)
    assert failure.detail.startswith("Not found: xxx")
    assert len(failure.detail) <= 256


# --- timeouts, deadline, cancellation -------------------------------------------


async def test_total_timeout_before_the_headers(autojump_clock: trio.testing.MockClock) -> None:
    async with fetcher_rig(
        [Attempt(enter_stall=Stall())], total_timeout_s=2, retry_attempts=0
    ) as rig:
        handle = make_handle()
        start = trio.current_time()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
        assert trio.current_time() - start == pytest.approx(2.0)
    failure = _ended(got).failure
    assert isinstance(failure, UpstreamTimeout)
    assert (failure.phase, failure.limit_s) == ("total time", 2)
    assert rig.transport.open_responses == 0


async def test_total_timeout_is_retried_before_output(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = [
        Attempt(chunks=[b": OPENROUTER PROCESSING\n\n", Stall()]),
        Attempt(chunks=[sse(E[0]), DONE]),
    ]
    async with fetcher_rig(attempts, total_timeout_s=2, retry_attempts=1) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    assert _payloads(got) == [EB[0]]
    assert _ended(got).failure is None
    (t0, _), (t1, _) = rig.transport.calls
    assert t1 - t0 >= 2.0


async def test_total_timeout_after_output_ends_the_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = [Attempt(chunks=[sse(E[0]), Stall()]), Attempt(chunks=[DONE])]
    async with fetcher_rig(attempts, total_timeout_s=5, retry_attempts=3) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    ended = _ended(got)
    assert ended.seq == 1
    assert isinstance(ended.failure, UpstreamTimeout)
    assert len(rig.transport.calls) == 1
    assert rig.transport.iterators_open == 0 and rig.transport.open_responses == 0


async def test_cancel_mid_stream_ends_with_the_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stall = Stall()
    async with fetcher_rig([Attempt(chunks=[sse(E[0], E[1]), stall, DONE])]) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        await stall.reached.wait()
        handle.cancel("the consumer closed the stream")
        handle.cancel("a second reason is ignored")
        got = (await rig.collect(handle))[handle.request_id]
        assert rig.transport.open_responses == 0  # the response was closed
        assert rig.transport.iterators_open == 0
    assert _payloads(got) == [EB[0], EB[1]]
    assert _ended(got) == StreamEnded(
        request_id=handle.request_id, seq=2, cancel_reason="the consumer closed the stream"
    )
    assert rig.counters.snapshot()["cancelled"] == 1


async def test_cancelled_before_it_starts(autojump_clock: trio.testing.MockClock) -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), DONE])]) as rig:
        handle = make_handle()
        handle.cancel("withdrawn")
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    assert got == [StreamEnded(request_id=handle.request_id, seq=0, cancel_reason="withdrawn")]
    assert rig.transport.open_responses == 0 and rig.transport.chunks_read == 0


async def test_cancel_during_backoff(autojump_clock: trio.testing.MockClock) -> None:
    attempts = [Attempt(status=503), Attempt(chunks=[sse(E[0]), DONE])]
    async with fetcher_rig(attempts, retry_backoff_initial_s=10, retry_backoff_max_s=10) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        await trio.testing.wait_all_tasks_blocked()  # asleep before the retry
        assert len(rig.transport.calls) == 1
        handle.cancel("user pressed stop")
        got = (await rig.collect(handle))[handle.request_id]
    assert got == [
        StreamEnded(request_id=handle.request_id, seq=0, cancel_reason="user pressed stop")
    ]
    assert len(rig.transport.calls) == 1


async def test_cancel_while_waiting_for_credit(autojump_clock: trio.testing.MockClock) -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0], E[1], E[2]), DONE])]) as rig:
        handle = make_handle(window_events=1)
        await rig.inbox.send(handle)
        first = await rig.outbox.receive()
        await trio.testing.wait_all_tasks_blocked()
        assert handle.window.waiting == 1
        handle.cancel("gone")
        ended = await rig.outbox.receive()
        _end_like_the_emitter(handle)
    assert first == SseBatch(request_id=handle.request_id, first_seq=0, payloads=(EB[0],))
    assert ended == StreamEnded(request_id=handle.request_id, seq=1, cancel_reason="gone")
    assert handle.window.in_flight == 1  # only the forwarded event holds a credit


async def test_request_deadline(autojump_clock: trio.testing.MockClock) -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), Stall()])], request_deadline_s=5) as rig:
        handle = make_handle(deadline=trio.current_time() + 5)
        start = trio.current_time()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
        assert trio.current_time() - start == pytest.approx(5.0)
    ended = _ended(got)
    assert ended.seq == 1
    assert ended.cancel_reason is None
    assert isinstance(ended.failure, RequestDeadlineExceeded)
    assert ended.failure.deadline_s == 5
    assert rig.counters.snapshot()["deadline_exceeded"] == 1


async def test_oversized_event_fails_the_request(autojump_clock: trio.testing.MockClock) -> None:
    attempts = [Attempt(chunks=[b"data: " + b"x" * 600, b"y" * 600, b"\n\n", DONE])]
    async with fetcher_rig(attempts, max_event_bytes=1024, retry_attempts=0) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        got = (await rig.collect(handle))[handle.request_id]
    failure = _ended(got).failure
    assert isinstance(failure, UpstreamProtocolError)
    assert "1,024 bytes" in failure.message
    assert rig.transport.chunks_read == 2  # stopped as soon as the limit was passed


async def test_done_ends_the_request_even_if_the_body_stays_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), DONE, Stall()])]) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        with trio.fail_after(5):  # mock time: fails at once if the fetcher just waits
            got = (await rig.collect(handle))[handle.request_id]
    assert _ended(got) == StreamEnded(request_id=handle.request_id, seq=1)


# --- credits and backpressure -----------------------------------------------------


async def test_a_full_window_blocks_the_fetcher_until_credits_return(
    autojump_clock: trio.testing.MockClock,
) -> None:
    chunks: list[bytes] = [sse(*E[:5]), sse(E[5]), DONE]
    async with fetcher_rig([Attempt(chunks=list(chunks))]) as rig:
        handle = make_handle(window_events=2)
        rid = handle.request_id
        await rig.inbox.send(handle)
        assert await rig.outbox.receive() == SseBatch(
            request_id=rid, first_seq=0, payloads=(EB[0], EB[1])
        )
        for _ in range(3):  # however long the consumer waits, nothing more comes
            await trio.sleep(60)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                rig.outbox.receive_nowait()
            assert (handle.window.in_flight, handle.window.waiting) == (2, 1)
            assert rig.transport.chunks_read == 1  # the body is not read on either
        # One credit back: one event goes. The fetcher never waits for a whole
        # batch's worth, which credits held elsewhere could delay for ever.
        handle.window.release(1)
        assert await rig.outbox.receive() == SseBatch(
            request_id=rid, first_seq=2, payloads=(EB[2],)
        )
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.WouldBlock):
            rig.outbox.receive_nowait()
        assert (handle.window.in_flight, handle.window.waiting) == (2, 1)
        handle.window.release(2)
        assert await rig.outbox.receive() == SseBatch(
            request_id=rid, first_seq=3, payloads=(EB[3], EB[4])
        )
        handle.window.release(2)
        # The next chunk is read and its event forwarded.
        assert await rig.outbox.receive() == SseBatch(
            request_id=rid, first_seq=5, payloads=(EB[5],)
        )
        assert await rig.outbox.receive() == StreamEnded(request_id=rid, seq=6)
        _end_like_the_emitter(handle)
        assert handle.window.in_flight == 1


async def test_full_shared_outbox_blocks_without_losing_credits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), sse(E[1]), DONE])], out_size=0) as rig:
        handle = make_handle()
        await rig.inbox.send(handle)
        await trio.testing.wait_all_tasks_blocked()
        assert rig.outbox.statistics().tasks_waiting_send == 1
        assert handle.window.in_flight == 1  # taken before the send
        got = (await rig.collect(handle, give_credit=False))[handle.request_id]
    assert _payloads(got) == [EB[0], EB[1]]
    assert handle.window.in_flight == 2


# --- the whole actor ---------------------------------------------------------------


async def test_cancellation_leaves_no_task(autojump_clock: trio.testing.MockClock) -> None:
    stalls = [Stall(), Stall()]
    cfg = EngineConfig()
    transport = FakeTransport(
        [Attempt(chunks=[sse(E[0]), stalls[0]]), Attempt(enter_stall=stalls[1])]
    )
    in_send, in_receive = trio.open_memory_channel[RequestHandle](0)
    out_send, out_receive = trio.open_memory_channel[FetchOut](100)
    actor = functools.partial(
        upstream_fetcher,
        in_receive,
        out_send,
        config=cfg,
        ports=EnginePorts(transport=transport, rng=random.Random(0)),
        counters=ActorCounters(),
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(actor, name="fetcher-actor")
            handles = [make_handle(), make_handle(deadline=math.inf)]
            for handle in handles:
                await in_send.send(handle)
            await stalls[0].reached.wait()
            await stalls[1].reached.wait()
            assert len(tasks_named("fetch ")) == 2
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught
    assert not tasks_named("fetch")
    assert transport.open_responses == 0
    assert transport.iterators_open == 0
    assert out_receive.statistics().open_send_channels == 0
    assert in_send.statistics().open_receive_channels == 0


# --- the tool loop: the request's turn mailbox ---------------------------------------


async def test_a_next_turn_streams_again_with_the_added_input() -> None:
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "c1", "output": "ok"}
    attempts = [Attempt(chunks=[sse(E[0]), DONE]), Attempt(chunks=[sse(E[1], E[2]), DONE])]
    request = ChatRequest(model="m", input=({"role": "user", "content": "hi"},))
    async with fetcher_rig(attempts) as rig:
        handle = make_handle(request=request)
        rid = handle.request_id
        await rig.inbox.send(handle)
        first = [await rig.outbox.receive(), await rig.outbox.receive()]
        assert first[-1] == StreamEnded(request_id=rid, seq=1, turn=0)
        handle.window.release(1)
        handle.next_turn(NextTurn(request_id=rid, turn=1, more_input=(call, output)))
        second = [await rig.outbox.receive(), await rig.outbox.receive()]
        # A new turn numbers its events from 0 again.
        assert second[0] == SseBatch(request_id=rid, first_seq=0, payloads=(EB[1], EB[2]))
        assert second[1] == StreamEnded(request_id=rid, seq=2, turn=1)
        _end_like_the_emitter(handle)
        await trio.testing.wait_all_tasks_blocked()
        assert not tasks_named("fetch ")  # the request task is gone
    bodies = [json.loads(body) for _, body in rig.transport.calls]
    assert bodies[0]["input"] == [{"role": "user", "content": "hi"}]
    assert bodies[1]["input"] == [{"role": "user", "content": "hi"}, call, output]
    assert rig.counters.snapshot()["turns"] == 1


async def test_tools_stopped_becomes_the_requests_stream_end() -> None:
    async with fetcher_rig([Attempt(chunks=[sse(E[0]), DONE])]) as rig:
        handle = make_handle()
        rid = handle.request_id
        await rig.inbox.send(handle)
        await rig.outbox.receive()
        assert await rig.outbox.receive() == StreamEnded(request_id=rid, seq=1, turn=0)
        handle.next_turn(ToolsStopped(request_id=rid, cancel_reason="stop pressed"))
        assert await rig.outbox.receive() == StreamEnded(
            request_id=rid, seq=0, turn=1, cancel_reason="stop pressed"
        )
        _end_like_the_emitter(handle)  # a cancelled ending: the emitter ends the request
        await trio.testing.wait_all_tasks_blocked()
        assert not tasks_named("fetch ")  # the request task is gone


async def test_a_second_next_turn_is_a_bug_not_a_queue() -> None:
    handle = make_handle()
    handle.next_turn(NextTurn(request_id=handle.request_id, turn=1, more_input=()))
    with pytest.raises(RuntimeError, match="tool loop bug"):
        handle.next_turn(NextTurn(request_id=handle.request_id, turn=2, more_input=()))
    handle.outbox.finish(Completed(request_id=handle.request_id, response_id=None, text_chars=0))
    handle.next_turn(NextTurn(request_id=handle.request_id, turn=3, more_input=()))  # ignored


async def test_cancel_reaches_whichever_phase_runs() -> None:
    handle = make_handle()
    with handle.cancel_scope() as first:
        handle.cancel("gone")
        await trio.lowlevel.checkpoint()
    assert first.cancelled_caught
    # A phase that starts after the cancellation is cancelled from the start.
    with handle.cancel_scope() as later:
        await trio.lowlevel.checkpoint()
    assert later.cancelled_caught
