"""The admission actor with a shared ledger: two desks (engines) share one ``SharedLedger``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from orpipe.actors.admission import AdmissionDesk, admission
from orpipe.actors.admission_ledger import LEAVES_CHANNEL, LedgerGate, return_all, send_leaves
from orpipe.engine.channels import ChannelRegistry
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import AdmissionRejected, RequestShed
from orpipe.engine.messages import Failed
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters
from tests.actors.fakes import Finished, make_handle
from tests.shared_ledger import SharedLedger


@dataclass
class Worker:
    desk: AdmissionDesk
    gate: LedgerGate
    admitted: trio.MemoryReceiveChannel[RequestHandle]
    channels: ChannelRegistry
    counters: ActorCounters
    leaves_scope: trio.CancelScope

    async def drain(self) -> list[RequestHandle]:
        await trio.testing.wait_all_tasks_blocked()
        out = []
        while True:
            try:
                out.append(self.admitted.receive_nowait())
            except trio.WouldBlock:
                return out

    async def submit(self, *handles: RequestHandle) -> None:
        """Submit in order, letting each arrive at the ledger before the next."""
        for handle in handles:
            self.desk.submit(handle)
            await trio.testing.wait_all_tasks_blocked()


async def _leaves(gate: LedgerGate, scope: trio.CancelScope) -> None:
    with scope:
        await send_leaves(gate)


@asynccontextmanager
async def workers(
    shared: SharedLedger, names: tuple[str, ...] = ("a", "b"), **config: object
) -> AsyncIterator[dict[str, Worker]]:
    cfg = EngineConfig(**config)  # type: ignore[arg-type]
    out: dict[str, Worker] = {}
    async with trio.open_nursery() as nursery:
        for name in names:
            channels, counters = ChannelRegistry(), ActorCounters()
            gate = LedgerGate(shared.port(name), cfg)
            gate.bind(channels, counters)
            desk = AdmissionDesk(cfg, gate)
            send, receive = trio.open_memory_channel[RequestHandle](100)
            scope = trio.CancelScope()
            await nursery.start(admission, desk, send)
            nursery.start_soon(_leaves, gate, scope)
            out[name] = Worker(desk, gate, receive, channels, counters, scope)
        yield out
        for worker in out.values():
            worker.desk.close()
        nursery.cancel_scope.cancel()


async def test_the_shared_limit_holds_and_permits_go_in_arrival_order_across_engines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=2, maxsize=10)
    async with workers(shared, max_concurrent_requests=5, queue_maxsize=10) as w:
        a1, b1, a2, b2, a3 = (make_handle() for _ in range(5))
        await w["a"].submit(a1)
        await w["b"].submit(b1)
        await w["a"].submit(a2)
        await w["b"].submit(b2)
        await w["a"].submit(a3)
        assert await w["a"].drain() == [a1]
        assert await w["b"].drain() == [b1]
        assert list(shared.line) == [a2.request_id, b2.request_id, a3.request_id]

        # b1 ends first, but the oldest waiter across both engines (a2) gets its permit.
        w["b"].desk.release(b1)
        assert await w["a"].drain() == [a2]
        assert await w["b"].drain() == []
        w["a"].desk.release(a1)
        assert await w["b"].drain() == [b2]
        w["a"].desk.release(a2)
        assert await w["a"].drain() == [a3]
        assert shared.peak_permits == 2
        assert shared.granted == [h.request_id for h in (a1, b1, a2, b2, a3)]
        stats = w["a"].desk.statistics()
        assert (stats.in_flight, stats.waiting, stats.admitted_total) == (1, 0, 3)
        assert w["a"].counters.snapshot()["ledger_arrived"] == 3


async def test_a_full_shared_line_refuses_at_once_with_the_ledgers_hint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=1, maxsize=1, retry_after_s=3.0)
    async with workers(shared, max_concurrent_requests=5, queue_maxsize=10) as w:
        finished = Finished()
        a1, b1, a2 = make_handle(), make_handle(), make_handle(finished=finished)
        await w["a"].submit(a1)
        await w["b"].submit(b1)
        start = trio.current_time()
        w["a"].desk.submit(a2)  # the local room has space: submit does not raise
        with trio.fail_after(1):
            await finished.called.wait()
        assert trio.current_time() == start  # at once: one round trip, no waiting
        [(handle, ending)] = finished.endings
        assert handle is a2
        assert isinstance(ending, Failed)
        # The same error a full local room raises from submit.
        assert type(ending.error) is AdmissionRejected
        assert ending.error.retry_after_s == 3.0
        assert ending.message == "The server is busy; retry in 3 s."
        stats = w["a"].desk.statistics()
        assert (stats.rejected_total, stats.waiting, stats.in_flight) == (1, 0, 1)
        assert w["a"].counters.snapshot()["ledger_refused"] == 1
        assert ("leave", a2.request_id) not in shared.calls  # it never held anything
        assert list(shared.line) == [b1.request_id]


async def test_a_cancelled_or_shed_waiter_leaves_the_shared_line(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=1, maxsize=10)
    async with workers(
        shared, max_concurrent_requests=5, queue_maxsize=10, queue_deadline_ms=5000
    ) as w:
        finished = Finished()
        a1, b1, b2 = make_handle(), make_handle(), make_handle(finished=finished)
        await w["a"].submit(a1)
        await w["b"].submit(b1, b2)
        assert list(shared.line) == [b1.request_id, b2.request_id]

        assert w["b"].desk.withdraw(b1.request_id) is b1
        await trio.testing.wait_all_tasks_blocked()
        assert list(shared.line) == [b2.request_id]

        with trio.fail_after(10):
            await finished.called.wait()
        [(_, ending)] = finished.endings
        assert isinstance(ending, Failed) and isinstance(ending.error, RequestShed)
        await trio.testing.wait_all_tasks_blocked()
        assert list(shared.line) == []
        assert w["b"].counters.snapshot()["ledger_leaves_sent"] == 2
        # Neither is ever admitted, even once a1 gives its permit back.
        w["a"].desk.release(a1)
        assert await w["b"].drain() == []
        assert shared.permits == {}


async def test_the_local_cap_still_holds_per_engine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=5, maxsize=10)
    async with workers(shared, ("a",), max_concurrent_requests=1, queue_maxsize=10) as w:
        a1, a2 = make_handle(), make_handle()
        await w["a"].submit(a1, a2)
        assert await w["a"].drain() == [a1]
        w["a"].desk.release(a1)
        assert await w["a"].drain() == [a2]
        await trio.testing.wait_all_tasks_blocked()
        assert list(shared.permits) == [a2.request_id]


async def test_owed_leaves_take_room_so_a_slow_ledger_cannot_grow_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=10, maxsize=10)
    async with workers(shared, ("a",), max_concurrent_requests=1, queue_maxsize=1) as w:
        a1 = make_handle()
        await w["a"].submit(a1)
        assert await w["a"].drain() == [a1]
        w["a"].leaves_scope.cancel()  # nobody gives back for now
        await trio.testing.wait_all_tasks_blocked()
        w["a"].desk.release(a1)
        a2, a3 = make_handle(), make_handle()
        w["a"].desk.submit(a2)  # one owed leave + one waiter fill 1 slot + 1 place
        with pytest.raises(AdmissionRejected):
            w["a"].desk.submit(a3)
        assert w["a"].channels.statistics()[LEAVES_CHANNEL].current_buffer_used == 1
        assert w["a"].gate.owed == 1


async def test_return_all_gives_back_everything_owed_or_held_even_when_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=1, maxsize=10)
    async with workers(shared, ("a", "b"), max_concurrent_requests=5, queue_maxsize=10) as w:
        a1, a2, b1 = make_handle(), make_handle(), make_handle()
        await w["a"].submit(a1, a2)
        await w["b"].submit(b1)
        assert await w["a"].drain() == [a1]
        w["a"].leaves_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        w["a"].desk.close()  # a2 leaves the line: owed
        # a1 is still running: held; the engine stops without its ending.
        shared.round_trip_s = 0.1
        with trio.CancelScope() as outer:
            outer.cancel()  # shielded: the hand-back runs even inside a cancelled scope
            await return_all(w["a"].gate, bound_s=5.0)
        assert shared.held_by("a") == (0, 0)
        assert list(shared.line) == [b1.request_id]
        snapshot = w["a"].counters.snapshot()
        assert (snapshot["ledger_leaves_sent"], snapshot["now_ledger_leaves_owed"]) == (2, 0)


async def test_return_all_is_bounded_and_counts_what_it_leaves_to_the_lease_expiry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=3, maxsize=10)
    async with workers(shared, ("a",), max_concurrent_requests=5, queue_maxsize=10) as w:
        handles = [make_handle() for _ in range(3)]
        await w["a"].submit(*handles)
        assert await w["a"].drain() == handles
        shared.round_trip_s = 1.0
        start = trio.current_time()
        await return_all(w["a"].gate, bound_s=1.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        snapshot = w["a"].counters.snapshot()
        assert (snapshot["ledger_leaves_sent"], snapshot["ledger_leaves_abandoned"]) == (1, 2)


async def test_a_waiter_cancelled_during_its_arrival_round_trip_still_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=1, maxsize=10)
    async with workers(shared, ("a",), max_concurrent_requests=5, queue_maxsize=10) as w:
        a1, a2 = make_handle(), make_handle()
        await w["a"].submit(a1)
        shared.round_trip_s = 1.0
        w["a"].desk.submit(a2)
        await trio.sleep(0.5)  # a2's arrive is on its way to the ledger
        assert ("arrive", a2.request_id) in shared.calls
        assert w["a"].desk.withdraw(a2.request_id) is a2
        await trio.sleep(5)
        assert list(shared.line) == []
        assert shared.calls[-1] == ("leave", a2.request_id)
        assert w["a"].gate.held == {a1.request_id: True}


class FlakyLeave:
    """Wraps a ledger port: the first ``leave`` raises ``OSError``."""

    def __init__(self, port: object) -> None:
        self.port = port
        self.failed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self.port, name)

    async def leave(self, request_id: str) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("connection reset")
        await self.port.leave(request_id)  # type: ignore[attr-defined]


async def test_a_leave_that_fails_stays_owed_and_is_sent_first_after_the_restart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=2, maxsize=10)
    config = EngineConfig()
    gate = LedgerGate(FlakyLeave(shared.port("a")), config)  # type: ignore[arg-type]
    gate.bind(ChannelRegistry(), ActorCounters())
    desk = AdmissionDesk(config, gate)
    send, receive = trio.open_memory_channel[RequestHandle](10)
    async with trio.open_nursery() as nursery:
        await nursery.start(admission, desk, send)
        a1 = make_handle()
        desk.submit(a1)
        assert await receive.receive() is a1
        desk.release(a1)
        with pytest.raises(OSError, match="connection reset"):
            await send_leaves(gate)
        assert (gate.sending, gate.owed) == (a1.request_id, 1)
        assert shared.permits == {a1.request_id: "a"}
        nursery.start_soon(send_leaves, gate)
        await trio.testing.wait_all_tasks_blocked()
        assert (gate.sending, gate.owed, shared.permits) == (None, 0, {})
        desk.close()
        nursery.cancel_scope.cancel()


async def test_closing_ends_the_actor_and_gives_back_every_waiters_place(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=1, maxsize=10)
    async with workers(shared, ("a",), max_concurrent_requests=5, queue_maxsize=10) as w:
        a1, a2, a3 = make_handle(), make_handle(), make_handle()
        await w["a"].submit(a1, a2, a3)
        assert await w["a"].drain() == [a1]
        assert w["a"].desk.close() == [a2, a3]
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.EndOfChannel):
            w["a"].admitted.receive_nowait()  # the actor closed its outbox
        assert list(shared.line) == []
        w["a"].desk.release(a1)  # the running request ends after the close
        await trio.testing.wait_all_tasks_blocked()
        assert shared.permits == {}


async def test_a_leave_cut_off_by_cancellation_is_sent_by_return_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    shared = SharedLedger(limit=1, maxsize=10)
    async with workers(shared, ("a",), max_concurrent_requests=5, queue_maxsize=10) as w:
        a1 = make_handle()
        await w["a"].submit(a1)
        assert await w["a"].drain() == [a1]
        shared.round_trip_s = 1.0
        w["a"].desk.release(a1)
        await trio.sleep(0.5)
        w["a"].leaves_scope.cancel()  # mid round trip: the leave may not have landed
        await trio.testing.wait_all_tasks_blocked()
        assert w["a"].gate.sending == a1.request_id
        await return_all(w["a"].gate, bound_s=5.0)
        assert shared.permits == {}
        assert w["a"].counters.snapshot()["ledger_leaves_sent"] == 1
        with pytest.raises(trio.ClosedResourceError):
            w["a"].gate._owe("late")  # nothing may owe once everything was given back
