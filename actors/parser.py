"""The parser pool: ``parser_workers`` tasks decoding SSE payloads.

Owns: clones of the ``fetch.out`` receive end and the ``parse.out`` send end,
one pair per worker; the originals are closed right after cloning, so the
downstream channel closes exactly when the last worker ends.

A payload that cannot be decoded becomes ``ParseFailed`` with its sequence
number: no number is ever lost, so the reorderer cannot hang (weakness 6 of
the original). On cancellation the workers just stop; nothing is buffered
here beyond the message in hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from orpipe.actors.draining import drain_nowait
from orpipe.actors.event_decoder import decode_event
from orpipe.engine.pipeline_messages import (
    FetchOut,
    ParsedBatch,
    ParseFailed,
    ParseOut,
    SseBatch,
    StreamItem,
)
from orpipe.engine.statistics import ActorCounters

__all__ = ["ParseTally", "decode_payloads", "parse_batch", "parser_pool"]


async def parser_pool(
    inbox: trio.MemoryReceiveChannel[FetchOut],
    outbox: trio.MemorySendChannel[tuple[ParseOut, ...]],
    *,
    workers: int,
    counters: ActorCounters,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        with inbox, outbox:
            for index in range(workers):
                nursery.start_soon(
                    _worker, inbox.clone(), outbox.clone(), counters, name=f"parser-{index}"
                )
        task_status.started()


async def _worker(
    inbox: trio.MemoryReceiveChannel[FetchOut],
    outbox: trio.MemorySendChannel[tuple[ParseOut, ...]],
    counters: ActorCounters,
) -> None:
    with inbox, outbox:
        async for first in inbox:
            tally = ParseTally()
            bundle = tuple([_parse(message, tally) for message in drain_nowait(inbox, first)])
            del first  # idle, hold nothing (actors.draining)
            # One counter update per bundle, not per event: this is the hot path.
            counters.add("bundles")
            counters.add("events", tally.events)
            if tally.failed:
                counters.add("parse_failed", tally.failed)
            await outbox.send(bundle)
            del bundle


class ParseTally:
    """Events decoded and failures among them, counted once per bundle (the hot path)."""

    __slots__ = ("events", "failed")

    def __init__(self) -> None:
        self.events = 0
        self.failed = 0


def parse_batch(
    request_id: str, first_seq: int, payloads: Sequence[bytes], tally: ParseTally
) -> ParsedBatch:
    """One request's consecutive payloads, decoded."""
    items = tuple(decode_payloads(first_seq, payloads, tally))
    return ParsedBatch(request_id=request_id, first_seq=first_seq, items=items)


def decode_payloads(
    first_seq: int, payloads: Sequence[bytes], tally: ParseTally
) -> list[StreamItem]:
    """Consecutive payloads → items numbered from ``first_seq`` (also the express lane's)."""
    items = [decode_event(first_seq + i, payload) for i, payload in enumerate(payloads)]
    tally.events += len(items)
    for item in items:
        if type(item) is ParseFailed:
            tally.failed += 1
    return items


def _parse(message: FetchOut, tally: ParseTally) -> ParseOut:
    if not isinstance(message, SseBatch):
        return message  # StreamEnded passes through, keeping its place by seq
    return parse_batch(message.request_id, message.first_seq, message.payloads, tally)
