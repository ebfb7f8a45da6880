"""The admission actor: moves requests from the waiting room to the fetcher.

Owns: the ``WaitingRoom`` (through ``AdmissionDesk``, the synchronous front
door the engine calls from ``submit``/``cancel``) and the send end of the
admitted channel. It wakes when a request arrives, a slot frees up, or the
oldest waiting request reaches a deadline; it sheds requests past the queue
deadline and fails those past their own deadline.

With a shared admission ledger (``EnginePorts.admission_ledger``) the desk
carries a ``LedgerGate`` and the actor runs ``_admit_through_ledger``: every
local waiter also needs the ledger's permit, and whatever a request held there
is given back when it leaves (see ``actors.admission_ledger``). Without one,
the loop and the desk's calls are exactly the engine's own room.

On cancellation: it simply stops; requests still waiting are ended by the
engine's shutdown (``Engine.aclose`` / ``open_engine``'s finaliser).
When the desk is closed and the room is empty it closes its outbox, which
starts the shutdown cascade downstream.
"""

from __future__ import annotations

import math

import trio

from orpipe.actors.admission_ledger import LedgerGate
from orpipe.actors.admission_room import WaitingRoom
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import RequestDeadlineExceeded, RequestShed
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import AdmissionStats

__all__ = ["AdmissionDesk", "admission"]

#: Longest wait for a ledger change before the oldest waiter asks again anyway, so a
#: missed notification costs at most this much delay, never a stuck line.
_ASK_AGAIN_S = 1.0


class AdmissionDesk:
    """Implements ``engine.supervisor.AdmissionDoor``: every method is synchronous."""

    def __init__(self, config: EngineConfig, gate: LedgerGate | None = None) -> None:
        self.config = config
        self.gate = gate
        self.room: WaitingRoom[RequestHandle] = WaitingRoom(
            max_in_flight=config.max_concurrent_requests,
            maxsize=config.queue_maxsize,
            retry_after_s=config.busy_retry_after_s,
        )
        self._wakeup = trio.lowlevel.ParkingLot()

    def submit(self, handle: RequestHandle) -> None:
        gate = self.gate
        self.room.enter(
            handle.request_id,
            handle,
            now=trio.current_time(),
            deadline=handle.deadline,
            reserved=0 if gate is None else gate.owed,
        )
        if gate is not None:
            gate.entered(handle)
        self._wakeup.unpark_all()

    def withdraw(self, request_id: str) -> RequestHandle | None:
        handle = self.room.withdraw(request_id)
        if handle is not None and self.gate is not None:
            self.gate.forget(request_id)
        return handle

    def release(self, handle: RequestHandle) -> None:
        self.room.release()
        if self.gate is not None:
            self.gate.forget(handle.request_id)
        self._wakeup.unpark_all()

    def close(self) -> list[RequestHandle]:
        waiting = self.room.close()
        if self.gate is not None:
            for handle in waiting:
                self.gate.forget(handle.request_id)
        self._wakeup.unpark_all()
        return waiting

    def statistics(self) -> AdmissionStats:
        return self.room.statistics()

    async def wait_for_change(self, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await self._wakeup.park()


async def admission(
    desk: AdmissionDesk,
    outbox: trio.MemorySendChannel[RequestHandle],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with outbox:
        task_status.started()
        if desk.gate is None:
            await _admit_locally(desk, outbox)
        else:
            await _admit_through_ledger(desk, desk.gate, outbox)


async def _admit_locally(
    desk: AdmissionDesk, outbox: trio.MemorySendChannel[RequestHandle]
) -> None:
    room, config = desk.room, desk.config
    while True:
        now = trio.current_time()
        _end_expired(desk, now)
        handle = room.admit_next(now)
        if handle is not None:
            handle.admitted_at = now
            await outbox.send(handle)
            continue
        if room.closed and room.waiting == 0:
            return
        await desk.wait_for_change(room.next_expiry(_queue_deadline_s(config)))


async def _admit_through_ledger(
    desk: AdmissionDesk, gate: LedgerGate, outbox: trio.MemorySendChannel[RequestHandle]
) -> None:
    """Arrivals first, in local order (for the shared line's order and an at-once
    refusal); then the oldest local waiter goes when it holds a permit and a local
    slot is free; it asks the ledger again only after something changed."""
    room, config = desk.room, desk.config
    ask = True
    while True:
        now = trio.current_time()
        _end_expired(desk, now)
        if gate.to_arrive:
            await gate.arrive(next(iter(gate.to_arrive.values())), room)
            continue
        oldest = room.oldest()
        may_start = oldest is not None and room.in_flight < room.max_in_flight
        if oldest is not None and may_start:
            if gate.held.get(oldest, False):
                handle = room.admit_next(now)
                assert handle is not None and handle.request_id == oldest
                handle.admitted_at = now
                await outbox.send(handle)
                continue
            if ask:
                # The room may change during the round trip: look again after it.
                ask = await gate.ask_again(oldest, room)
                continue
        if room.closed and room.waiting == 0:
            return
        deadline = room.next_expiry(_queue_deadline_s(config))
        if may_start:
            await _wait_for_ledger_or_room(desk, gate, deadline)
        else:
            await desk.wait_for_change(deadline)
        ask = True


async def _wait_for_ledger_or_room(desk: AdmissionDesk, gate: LedgerGate, deadline: float) -> None:
    """Until the ledger or the room changes, the deadline, or ``_ASK_AGAIN_S`` passes."""
    timeout = min(_ASK_AGAIN_S, max(0.0, deadline - trio.current_time()))
    async with trio.open_nursery() as nursery:

        async def ledger_changed() -> None:
            await gate.ledger.wait_for_change(timeout)
            nursery.cancel_scope.cancel()

        nursery.start_soon(ledger_changed)
        await desk.wait_for_change(math.inf)
        nursery.cancel_scope.cancel()


def _end_expired(desk: AdmissionDesk, now: float) -> None:
    """Fail the waiters past the queue deadline (shed) or their own deadline."""
    config = desk.config
    for expired, waited, shed in desk.room.expired(now, _queue_deadline_s(config)):
        error = (
            RequestShed(waited, config.busy_retry_after_s)
            if shed
            else RequestDeadlineExceeded(config.request_deadline_s)
        )
        if desk.gate is not None:
            desk.gate.forget(expired.request_id)
        expired.outbox.fail(error)


def _queue_deadline_s(config: EngineConfig) -> float | None:
    return None if config.queue_deadline_ms is None else config.queue_deadline_ms / 1000
