"""The admission actor: moves requests from the waiting room to the fetcher.

Owns: the ``WaitingRoom`` (through ``AdmissionDesk``, the synchronous front
door the engine calls from ``submit``/``cancel``) and the send end of the
admitted channel. It wakes when a request arrives, a slot frees up, or the
oldest waiting request reaches a deadline; it sheds requests past the queue
deadline and fails those past their own deadline.

On cancellation: it simply stops; requests still waiting are ended by the
engine's shutdown (``Engine.aclose`` / ``open_engine``'s finaliser).
When the desk is closed and the room is empty it closes its outbox, which
starts the shutdown cascade downstream.
"""

from __future__ import annotations

import trio

from orpipe.actors.admission_room import WaitingRoom
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import RequestDeadlineExceeded, RequestShed
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import AdmissionStats

__all__ = ["AdmissionDesk", "admission"]


class AdmissionDesk:
    """Implements ``engine.supervisor.AdmissionDoor``: every method is synchronous."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.room: WaitingRoom[RequestHandle] = WaitingRoom(
            max_in_flight=config.max_concurrent_requests,
            maxsize=config.queue_maxsize,
            retry_after_s=config.busy_retry_after_s,
        )
        self._wakeup = trio.lowlevel.ParkingLot()

    def submit(self, handle: RequestHandle) -> None:
        self.room.enter(
            handle.request_id,
            handle,
            now=trio.current_time(),
            deadline=handle.deadline,
        )
        self._wakeup.unpark_all()

    def withdraw(self, request_id: str) -> RequestHandle | None:
        return self.room.withdraw(request_id)

    def release(self, handle: RequestHandle) -> None:
        self.room.release()
        self._wakeup.unpark_all()

    def close(self) -> list[RequestHandle]:
        waiting = self.room.close()
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
    room, config = desk.room, desk.config
    with outbox:
        task_status.started()
        while True:
            now = trio.current_time()
            for expired, waited, shed in room.expired(now, _queue_deadline_s(config)):
                error = (
                    RequestShed(waited, config.busy_retry_after_s)
                    if shed
                    else RequestDeadlineExceeded(config.request_deadline_s)
                )
                expired.outbox.fail(error)
            handle = room.admit_next(now)
            if handle is not None:
                handle.admitted_at = now
                await outbox.send(handle)
                continue
            if room.closed and room.waiting == 0:
                return
            await desk.wait_for_change(room.next_expiry(_queue_deadline_s(config)))


def _queue_deadline_s(config: EngineConfig) -> float | None:
    return None if config.queue_deadline_ms is None else config.queue_deadline_ms / 1000
