"""engine.request_outbox, through a RequestHandle: the outbound buffer's one writer, its rules."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from orpipe.engine.errors import EngineClosed
from orpipe.engine.messages import (
    ChatRequest,
    Completed,
    Ending,
    Failed,
    Notice,
    OutboundBatch,
    Status,
    TextDelta,
)
from tests.actors.fakes import Finished, drain_outbound, make_handle

RID = "r1"


class _Rig:
    """A request's outbox, its window, its buffer (``drain_outbound``) and its endings."""

    def __init__(self, window: int = 8) -> None:
        self.finished = Finished()
        self.handle = make_handle(
            window_events=window,
            request=ChatRequest(model="m", input=(), request_id=RID),
            finished=self.finished,
        )
        self.window = self.handle.window
        self.outbox = self.handle.outbox

    @property
    def endings(self) -> list[Ending]:
        return [ending for _, ending in self.finished.endings]

    def taken(self, credits: int) -> None:
        """Credits the fetcher took for the events about to be delivered."""
        assert self.window.try_acquire(credits)

    def batches(self) -> list[OutboundBatch]:
        return drain_outbound(self.handle)


def _text(text: str) -> TextDelta:
    return TextDelta(request_id=RID, text=text)


async def test_events_without_a_credit_wait_for_the_next_delivery() -> None:
    rig = _Rig()
    status = Status(request_id=RID, description="Searching…", done=False)
    assert rig.outbox.deliver([status], 0) == 0
    assert rig.batches() == []
    rig.taken(2)
    assert rig.outbox.deliver([_text("a")], 2) == 2
    assert rig.batches() == [OutboundBatch(events=(status, _text("a")), credits=2)]


async def test_a_delivery_with_nothing_to_show_gives_its_credits_back() -> None:
    rig = _Rig()
    rig.taken(3)
    assert rig.outbox.deliver([], 3) == 0
    assert rig.batches() == []
    assert rig.window.in_flight == 0


async def test_the_ending_comes_last_once_and_closes_the_buffer() -> None:
    rig = _Rig()
    notice = Notice(request_id=RID, message="held")
    rig.outbox.deliver([notice], 0)
    rig.taken(1)
    ending = Completed(request_id=RID, response_id=None, text_chars=1)
    rig.outbox.finish(ending, [_text("a")], 1)
    rig.outbox.finish(Completed(request_id=RID, response_id=None, text_chars=9))
    assert rig.batches() == [
        OutboundBatch(events=(notice, _text("a")), credits=1),
        OutboundBatch(events=(ending,), credits=0),
    ]
    assert rig.endings == [ending]
    assert rig.outbox.finished
    with pytest.raises(trio.EndOfChannel):
        rig.handle.outbox_receive.receive_nowait()


async def test_after_the_ending_a_delivery_only_returns_its_credits() -> None:
    rig = _Rig()
    rig.outbox.fail(EngineClosed())
    rig.batches()
    rig.taken(2)
    assert rig.outbox.deliver([_text("late")], 2) == 0
    assert rig.window.in_flight == 0
    [ending] = rig.endings
    assert isinstance(ending, Failed) and ending.message == EngineClosed().message


async def test_tell_waits_for_a_credit_of_its_own() -> None:
    rig = _Rig(window=1)
    rig.taken(1)  # the window is full: a slow reader
    status = Status(request_id=RID, description="Calling echo…", done=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rig.outbox.tell, [status])
        await trio.testing.wait_all_tasks_blocked()
        assert rig.batches() == []
        rig.window.release(1)  # the reader took something
    assert rig.batches() == [OutboundBatch(events=(status,), credits=1)]
