"""The upstream fetcher (``upstream_fetcher``; "the fetcher" in the engine's notes and
statistics): the upstream HTTP streams of each admitted request.

Owns: a nursery with one task per admitted request, the send end of the
shared ``fetch.out`` channel, a send end of the channel it announces turns
on and, with the express lane, a send end of ``batch.out`` and each
request's ``DeltaBatcher`` (the channels are closed
after the last request task ends, so the stages after it see the end only
when no request can still send).

The express lane (``EngineConfig.express_lane``, the default): each request
task runs the synchronous cores of the parse and batch roles for its own
request (``actors.parser.decode_payloads``, then its own ``DeltaBatcher``) and
hands the emitter finished bundles on ``batch.out``; the idle-flush timers
of its pending runs are the batcher's (``actors.idle_flush``). One request's
events come from one task in sequence, so nothing needs reordering, and an
event that arrives alone (paced streams: the common case) wakes no other
task until a run is ready. Measured at 16 paced streams, handing parsed
events to the batcher actor instead cost a batcher wake-up per event, about
a tenth of the engine's CPU per event. The parse work is counted in the
parser's statistics, the batching in the batcher's. The shared stages stay
for researchers (``express_lane=False``), where the parser pool bundles
many requests' events per wake-up.

A request task announces each turn with a ``TurnStarted`` carrying the
request's handle (on ``announce``: ``parse.out``, or ``batch.out`` on the
express lane, where one request's messages keep their order), which is how
the stages after it learn the request without looking it up anywhere.
It streams the turn, sends its ``StreamEnded``, then waits on
the request's turn mailbox: the tool executor answers with the next turn
(``NextTurn``: the model's calls and the tool outputs to send back) or with
``ToolsStopped``; a request that is over closes the mailbox instead. The
task, not a channel from the tool executor, is what carries the loop back
to the fetcher, so the actor graph has no channel cycle: shutdown still
cascades from admission down, and bounded buffers cannot deadlock (the
turn limit and the one-slot mailbox bound what a request can queue).

Per request it POSTs the body, retries connect errors, 408/425/429/5xx and
timeouts with backoff **only before the first event was forwarded** (after
that a failure ends the request, never re-sending text), frames SSE, and
forwards every chunk's events as one ``SseBatch`` numbered by sequence,
taking credits from the request's window first — that wait is where a slow
consumer stops the socket read. A terminal event (or an in-band error) ends
the turn at once, whether or not the server closes the body. A body that is
not an event stream is read by ``actors.upstream_body``: a JSON answer is
delivered as the events that would have carried it, anything else is named
in the error.

On cancellation (client gone, deadline): the turn's cancel scope is
cancelled; the task then sends ``StreamEnded`` with the reason, outside that
scope, so the pipeline still releases the request's state in order. If the
whole engine is cancelled the send is cancelled too, and the engine's
finaliser ends the request.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import trio

from orpipe.actors.batcher import open_request_batcher
from orpipe.actors.delta_batching import DeltaBatcher
from orpipe.actors.idle_flush import IdleFlushes
from orpipe.actors.parser import ParseTally, decode_payloads
from orpipe.actors.retry_policy import RetryPolicy, http_error_from_response
from orpipe.actors.sse_framer import EventTooLarge, SseFramer
from orpipe.actors.upstream_body import (
    BodyKind,
    Inflater,
    body_kind,
    describe_html,
    ends_response,
    inflate_error,
    inflater_for,
    json_body_events,
    not_a_stream,
    redirect_error,
)
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import (
    EngineError,
    RequestDeadlineExceeded,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from orpipe.engine.logs import logger, request_context
from orpipe.engine.messages import JsonObject, NextTurn, ToolsStopped
from orpipe.engine.pipeline_messages import (
    BatchedItem,
    BatchOut,
    FetchOut,
    RequestBatch,
    SseBatch,
    StreamEnded,
    TextRun,
    TurnStarted,
)
from orpipe.engine.ports import EnginePorts, UpstreamResponse
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters

__all__ = ["upstream_fetcher"]

M = TypeVar("M")

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True, kw_only=True)
class _FetchLanes:
    """What every request task of the fetcher uses: its lanes downstream, settings, counters."""

    outbox: trio.MemorySendChannel[FetchOut]
    #: The express lane: finished bundles, in order, straight to the emitter.
    express: trio.MemorySendChannel[tuple[BatchOut, ...]] | None
    #: Where each turn's ``TurnStarted`` goes (the request's handle, ahead of its items).
    announce: trio.MemorySendChannel[tuple[TurnStarted, ...]] | None
    #: The idle-flush timers of the express lane's pending runs.
    flushes: IdleFlushes
    config: EngineConfig
    ports: EnginePorts
    policy: RetryPolicy
    counters: ActorCounters
    #: The parse role's counters: the express lane's parsing is counted there too.
    parse_counters: ActorCounters
    #: The batch role's counters: the express lane's batching is counted there too.
    batch_counters: ActorCounters


async def upstream_fetcher(
    inbox: trio.MemoryReceiveChannel[RequestHandle],
    outbox: trio.MemorySendChannel[FetchOut],
    express: trio.MemorySendChannel[tuple[BatchOut, ...]] | None = None,
    *,
    announce: trio.MemorySendChannel[tuple[TurnStarted, ...]] | None = None,
    config: EngineConfig,
    ports: EnginePorts,
    counters: ActorCounters,
    parse_counters: ActorCounters | None = None,
    batch_counters: ActorCounters | None = None,
    flushes: IdleFlushes | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    shared = _FetchLanes(
        outbox=outbox,
        express=express,
        announce=announce,
        config=config,
        ports=ports,
        policy=RetryPolicy.from_config(config),
        counters=counters,
        parse_counters=parse_counters if parse_counters is not None else counters,
        batch_counters=batch_counters if batch_counters is not None else counters,
        flushes=flushes if flushes is not None else IdleFlushes(counters),
    )
    with outbox, express or contextlib.nullcontext(), announce or contextlib.nullcontext():
        async with trio.open_nursery() as nursery:
            with inbox:
                task_status.started()
                async for handle in inbox:
                    nursery.start_soon(
                        _RequestFetch(handle, shared).run, name=f"fetch {handle.request_id}"
                    )
                    del handle  # idle, hold nothing (actors.draining)


#: After ``[DONE]`` or a terminal event the body should end at once. Reading its end lets the HTTP
#: body iterators finish normally instead of being abandoned, but a server that
#: keeps the body open must not delay the request's ending: both are bounded.
_AFTER_DONE_LIMIT = 64 * 1024
_AFTER_DONE_GRACE_S = 0.1


def _inflated(inflater: Inflater | None, raw: bytes) -> Iterator[bytes]:
    """The body's bytes as sent, or decompressed in bounded pieces."""
    if inflater is None:
        yield raw
        return
    try:
        pieces = inflater.feed(raw)
    except zlib.error as exc:
        raise inflate_error(exc) from exc
    yield from pieces


def _inflated_end(inflater: Inflater) -> list[bytes]:
    try:
        return inflater.close()
    except zlib.error as exc:
        raise inflate_error(exc) from exc


async def _drain_after_done(chunks: AsyncGenerator[bytes, None]) -> None:
    seen = 0
    with trio.move_on_after(_AFTER_DONE_GRACE_S):
        async for chunk in chunks:
            seen += len(chunk)
            if seen > _AFTER_DONE_LIMIT:
                return


class _RequestFetch:
    """One request's upstream turns; ``next_seq`` events of this turn were forwarded so far."""

    def __init__(self, handle: RequestHandle, shared: _FetchLanes) -> None:
        self.handle = handle
        self.shared = shared
        self.next_seq = 0
        self.turn = 0
        #: What earlier turns added to the input (model output, tool outputs).
        self.more_input: tuple[JsonObject, ...] = ()
        #: The express lane's batcher for this turn, and its idle flush in seconds.
        self.batching: tuple[DeltaBatcher, float] | None = None

    async def run(self) -> None:
        request = self.handle.request
        chat_id = request.artifacts.chat_id if request.artifacts is not None else None
        # Every record of this request's tasks carries its ids (and its user's level).
        with request_context(
            request.request_id, user_id=request.user_id, chat_id=chat_id, level=request.log_level
        ):
            logger.debug("fetching {} ({} input items)", request.model, len(request.input))
            await self._run()

    async def _run(self) -> None:
        self.shared.counters.add("requests")
        ended = await self._turn()
        while True:
            await self._send_ended(ended)
            # After every StreamEnded, whatever it says: the emitter either ends
            # the request (which closes the mailbox) or hands the turn to the tool
            # executor, which always answers. Returning early on a cancelled turn
            # would strand a round the emitter started from a response that had
            # completed just before the cancellation.
            try:
                mail = await self.handle.turns_receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return  # the request is over: no more turns
            match mail:
                case NextTurn(turn=turn, more_input=more):
                    self.turn, self.next_seq = turn, 0
                    self.more_input += more
                    self.shared.counters.add("turns")
                    ended = await self._turn()
                case ToolsStopped(cancel_reason=reason, failure=failure):
                    if reason is not None:
                        self.shared.counters.add("cancelled")
                    if failure is not None:
                        self.shared.counters.add("failed")
                    self.turn += 1
                    ended = StreamEnded(
                        request_id=self.handle.request_id,
                        seq=0,
                        turn=self.turn,
                        failure=failure,
                        cancel_reason=reason,
                    )

    async def _turn(self) -> StreamEnded:
        """Stream one turn; its ``StreamEnded`` (sent by the caller, outside the scope)."""
        handle, shared = self.handle, self.shared
        counters = shared.counters
        if shared.announce is not None:
            # Outside the turn's scope, like its StreamEnded: whoever ends the
            # request downstream needs the handle even if the turn never starts.
            await self._send(shared.announce, (TurnStarted(handle),), 0)
        failure: EngineError | None = None
        with handle.cancel_scope() as scope:
            try:
                await self._stream_with_retries()
            except UpstreamError as exc:
                failure = exc
        cancel_reason = None
        if scope.cancelled_caught:
            if handle.cancel_reason is not None:
                cancel_reason = handle.cancel_reason
                counters.add("cancelled")
            else:  # only the deadline cancels the scope without a reason
                failure = RequestDeadlineExceeded(shared.config.request_deadline_s)
                counters.add("deadline_exceeded")
        if failure is not None:
            counters.add("failed")
            logger.warning("turn {} failed: {}", self.turn, failure.message)
        elif cancel_reason is not None:
            logger.info("turn {} cancelled: {}", self.turn, cancel_reason)
        else:
            logger.debug("turn {} streamed {} events", self.turn, self.next_seq)
        return StreamEnded(
            request_id=handle.request_id,
            seq=self.next_seq,
            turn=self.turn,
            failure=failure,
            cancel_reason=cancel_reason,
        )

    async def _stream_with_retries(self) -> None:
        shared = self.shared
        body = _encode(self.handle.request.body(self.more_input))
        retries = 0
        while True:
            try:
                await self._one_attempt(body)
                return
            except UpstreamError as exc:
                if self.next_seq > 0:
                    raise  # output began: never re-send text
                delay = shared.policy.delay(retries, exc, shared.ports.rng)
                if delay is None:
                    raise
                retries += 1
                shared.counters.add("retries")
                logger.info(
                    "attempt {} failed ({}); retrying in {:.1f} s", retries, exc.message, delay
                )
                await trio.sleep(delay)

    async def _one_attempt(self, body: bytes) -> None:
        config = self.shared.config
        total = config.total_timeout_s
        with trio.move_on_after(total if total is not None else math.inf) as attempt_scope:
            async with self.shared.ports.transport.stream(body) as response:
                await self._read_response(response)
        if attempt_scope.cancelled_caught:
            raise UpstreamTimeout("total time", total or 0.0)

    async def _read_response(self, response: UpstreamResponse) -> None:
        """Whatever came back: an error status, a stream, or a body that is not one."""
        config, counters = self.shared.config, self.shared.counters
        status, headers = response.status_code, response.headers
        if status >= 400:
            error_body = await response.read_limited(config.max_error_body_bytes)
            counters.add(f"http_{status}")
            raise http_error_from_response(status, error_body, headers, time.time())
        if 300 <= status < 400:
            counters.add("not_a_stream")
            raise redirect_error(status, headers)
        inflater = inflater_for(status, headers)
        framer = SseFramer(config.max_event_bytes)
        kind: BodyKind | None = None
        # aclosing: leaving at the end of the response must close the body
        # iterator now, not whenever the garbage collector gets to it.
        async with contextlib.aclosing(response.iter_bytes()) as chunks:
            async for raw in chunks:
                counters.add("bytes", len(raw))
                for chunk in _inflated(inflater, raw):
                    if kind is None:
                        kind = body_kind(headers, chunk)
                        if kind != "sse":
                            counters.add("not_a_stream")
                            await self._not_a_stream(
                                kind,
                                chunk,
                                chunks,
                                status=status,
                                headers=headers,
                                inflater=inflater,
                            )
                            return
                    if await self._frame(framer, chunk):
                        await _drain_after_done(chunks)
                        return
            if inflater is not None:
                for chunk in _inflated_end(inflater):
                    if await self._frame(framer, chunk):
                        return
        if kind is None:  # not one byte: retried like a cut connection, before any output
            raise UpstreamProtocolError(
                f"OpenRouter answered with an empty body (HTTP {status}) instead of a stream; "
                "retry in a moment."
            )
        if payloads := framer.close():
            await self._forward(payloads)

    async def _frame(self, framer: SseFramer, chunk: bytes) -> bool:
        """Frame and forward one chunk's events; True once the response has ended."""
        try:
            payloads = framer.feed(chunk)
        except EventTooLarge as exc:
            raise UpstreamProtocolError(
                f"OpenRouter sent an event larger than {exc.limit:,} bytes, so "
                "the stream was stopped to protect memory; retry, or raise "
                "max_event_bytes."
            ) from exc
        if not payloads:
            return framer.done
        await self._forward(payloads)
        # A terminal event ends the answer now: a server that leaves the
        # connection open after it must not hold the request until the idle timeout.
        return framer.done or any(map(ends_response, payloads))

    async def _not_a_stream(
        self,
        kind: BodyKind,
        first: bytes,
        chunks: AsyncGenerator[bytes, None],
        *,
        status: int,
        headers: Mapping[str, str],
        inflater: Inflater | None,
    ) -> None:
        """A JSON answer is delivered (or its error raised); anything else is named."""
        limit = self.shared.config.max_event_bytes
        body = bytearray(first)
        if kind in ("json", "html"):
            async for raw in chunks:
                for chunk in _inflated(inflater, raw):
                    body += chunk
                if len(body) > limit:
                    break
        if kind == "json":
            if len(body) > limit:
                raise UpstreamProtocolError(
                    f"OpenRouter answered with a JSON body larger than {limit:,} bytes instead "
                    "of a stream, so it was not read; retry, or raise max_event_bytes."
                )
            await self._forward(json_body_events(bytes(body), status, headers))
            return
        if kind == "html":
            raise not_a_stream(
                describe_html(bytes(body[:limit])),
                status,
                headers,
                "a proxy between here and OpenRouter may be interfering (a captive portal, a "
                "corporate proxy, a maintenance page); check BASE_URL and the proxy, then retry.",
            )
        raise not_a_stream(
            "a body of an unknown kind",
            status,
            headers,
            "check BASE_URL (it should be OpenRouter's API, …/api/v1) and any proxy in between.",
        )

    async def _send_ended(self, ended: StreamEnded) -> None:
        """The turn's end, down the same lane as its events (so it comes after them).

        On the express lane the turn's pending text goes first, in the same
        bundle: the next turn starts with a fresh batcher, as the batcher actor does.
        """
        express = self.shared.express
        if express is None:
            await self.shared.outbox.send(ended)
            return
        bundle: list[BatchOut] = []
        if self.batching is not None:
            batcher = self.batching[0]
            self.batching = None
            self.shared.flushes.disarm(batcher.request_id)
            if runs := batcher.flush(final=True):
                bundle.append(RequestBatch(request_id=batcher.request_id, items=tuple(runs)))
        bundle.append(ended)
        await express.send(tuple(bundle))

    async def _forward(self, payloads: list[bytes]) -> None:
        """Send events downstream in batches, credits first.

        Each batch is as large as the credits free at that moment
        (``CreditWindow.acquire_some``): waiting for a whole batch's worth
        could wait forever on credits a pending text run holds. The fast path
        neither waits nor yields: the socket read in the same loop is this
        task's checkpoint, and skipping two scheduler round trips per chunk
        is most of the fetcher's cost under load. Only an empty window or a
        full channel makes it wait.
        """
        window, express = self.handle.window, self.shared.express
        tally = ParseTally()
        start, total = 0, len(payloads)
        while start < total:
            count = window.try_acquire_some(total - start)
            if not count:
                count = await window.acquire_some(total - start)
            part = payloads[start : start + count]
            if express is not None:
                await self._send_batched(express, part, tally)
            else:
                await self._send_raw(part, count)
            start += count
            self.next_seq += count
            self.shared.counters.add("events", count)
            self.shared.counters.add("batches")
        if tally.events:  # counted as the parser pool counts a bundle
            tallied = self.shared.parse_counters
            tallied.add("bundles")
            tallied.add("events", tally.events)
            tallied.add("express_events", tally.events)
            if tally.failed:
                tallied.add("parse_failed", tally.failed)

    async def _send_raw(self, part: list[bytes], credits: int) -> None:
        """The shared stages' route: the payloads to the parser pool."""
        batch = SseBatch(
            request_id=self.handle.request_id, first_seq=self.next_seq, payloads=tuple(part)
        )
        await self._send(self.shared.outbox, batch, credits)

    async def _send_batched(
        self,
        express: trio.MemorySendChannel[tuple[BatchOut, ...]],
        part: list[bytes],
        tally: ParseTally,
    ) -> None:
        """The express lane: decode, merge, and send what is ready as one bundle.

        Pushed and sent in one step, so the alarm's flush of a later run can
        never overtake it (``actors.idle_flush``).
        """
        shared, rid = self.shared, self.handle.request_id
        if self.batching is None:
            self.batching = open_request_batcher(shared.config, rid, self.handle)
            shared.batch_counters.add("express_turns")
        batcher, idle_s = self.batching
        items: list[BatchedItem] = []
        for item in decode_payloads(self.next_seq, part, tally):
            items.extend(batcher.push(item))
        shared.flushes.settle(batcher, idle_s)
        if not items:
            return  # all pending: the run holds their credits
        # The bundle carries its items' credits (the pending run keeps its own).
        credits = sum(item.events if isinstance(item, TextRun) else 1 for item in items)
        await self._send(express, (RequestBatch(request_id=rid, items=tuple(items)),), credits)

    async def _send(self, channel: trio.MemorySendChannel[M], message: M, credits: int) -> None:
        """Send without yielding when there is room; credits go back if it is not sent."""
        try:
            try:
                channel.send_nowait(message)
            except trio.WouldBlock:
                await channel.send(message)
        except BaseException:
            self.handle.window.release(credits)  # not sent: nobody else will return them
            raise
