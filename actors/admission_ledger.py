"""Admission through a shared ledger (``engine.ports.AdmissionLedger``), for several engines.

Owns: ``LedgerGate``, what this engine holds at the ledger (a place in the shared
line or a permit, per request id) and the ``admission.leaves`` channel of ids whose
place or permit must be given back; ``send_leaves``, the service that gives them
back; and ``return_all``, the last, shielded hand-back when the engine stops. The
admission actor's loop with a ledger is ``actors.admission._admit_through_ledger``.

The engine's own ``WaitingRoom`` still keeps the local waiters in order, enforces
their deadlines and caps this worker at ``max_concurrent_requests``; the ledger
decides, across workers, who goes next. Each local waiter, in local arrival order,
``arrive``s at the ledger once: admitted, it goes to the fetcher as without a
ledger; refused (the shared line is full), its request ends at once with the busy
error a full local room gives (``AdmissionRejected``, with the ledger's retry
hint); else it keeps its place and the actor asks again (``retry``) for the oldest
local waiter whenever the ledger or the room changes. A permit granted while this
worker is at its own cap stays held, unused, until a local slot frees: the local cap
normally equals the shared limit, so that happens only when this worker holds them all.

Giving back never blocks the synchronous callers (``Engine.cancel``, a request's
ending): they put the id on ``admission.leaves`` and ``send_leaves`` calls
``leave`` from trio. The channel is bounded because an id waiting there still
counts against this worker's room (``WaitingRoom.enter``'s ``reserved``): a slow
ledger makes this worker refuse new requests rather than queue without end.

On cancellation: the admission actor simply stops (the engine's shutdown ends the
waiters, which queues their leaves); ``send_leaves`` stops, and the id it was
sending stays owed. When the engine has stopped, ``return_all`` gives back every
owed id, still held or queued, shielded from cancellation and bounded by
``shutdown_grace_s``; what it cannot send in that time the ledger's lease expiry
returns (counted as ``ledger_leaves_abandoned``).
"""

from __future__ import annotations

import collections

import trio

from orpipe.actors.admission_room import WaitingRoom
from orpipe.engine.channels import ChannelRegistry
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import AdmissionRejected
from orpipe.engine.ports import AdmissionLedger, LedgerVerdict
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters

__all__ = ["LEAVES_CHANNEL", "LedgerGate", "return_all", "send_leaves"]

#: The name of the bounded channel of ids to give back (``statistics().channels``).
LEAVES_CHANNEL = "admission.leaves"


class LedgerGate:
    """What this engine holds at the shared ledger; every method except the async
    ones is synchronous, for ``AdmissionDesk``."""

    def __init__(self, ledger: AdmissionLedger, config: EngineConfig) -> None:
        self.ledger = ledger
        # Stand-ins until ``bind`` gives the engine's own (nothing is sent before).
        self.counters = ActorCounters()
        # Ids that still count against the room: waiting + in flight + owed
        # leaves <= queue_maxsize + max_concurrent_requests (see ``reserved``),
        # plus the one id the actor may be asking about after it left the room.
        self._size = config.queue_maxsize + config.max_concurrent_requests + 1
        self._send, self._receive = trio.open_memory_channel[str](0)
        #: Local waiters not yet arrived at the ledger, in arrival order.
        self.to_arrive: collections.OrderedDict[str, RequestHandle] = collections.OrderedDict()
        #: Request id -> True for a permit, False for a place in the shared line.
        self.held: dict[str, bool] = {}
        #: The id ``send_leaves`` is giving back right now (owed until it returns).
        self.sending: str | None = None

    def bind(self, channels: ChannelRegistry, counters: ActorCounters) -> None:
        """Open ``admission.leaves`` in the engine's registry and report to its counters
        (the graph calls this as it starts, before any request can arrive)."""
        self._send, self._receive = channels.open(LEAVES_CHANNEL, self._size)
        self.counters = counters

    @property
    def owed(self) -> int:
        """Leaves queued and not yet sent: they still take room in this worker."""
        return self._receive.statistics().current_buffer_used + (self.sending is not None)

    def entered(self, handle: RequestHandle) -> None:
        self.to_arrive[handle.request_id] = handle

    def forget(self, request_id: str) -> None:
        """The request left (ended, withdrawn, shed, closed): give back what it holds."""
        if self.to_arrive.pop(request_id, None) is not None:
            return  # never reached the ledger: nothing to give back
        if self.held.pop(request_id, None) is not None:
            self._owe(request_id)

    def _owe(self, request_id: str) -> None:
        # Cannot overflow: see the channel's size in __init__.
        self._send.send_nowait(request_id)
        self.counters.level("ledger_leaves_owed", self.owed)

    async def arrive(self, handle: RequestHandle, room: WaitingRoom[RequestHandle]) -> None:
        """The oldest local waiter not yet at the ledger arrives there (one round trip)."""
        request_id = handle.request_id
        del self.to_arrive[request_id]
        verdict: LedgerVerdict = await self.ledger.arrive(request_id)
        if verdict.retry_after_s is not None:
            self.counters.add("ledger_refused")
            if room.refuse(request_id) is not None:
                handle.outbox.fail(AdmissionRejected(verdict.retry_after_s))
            return
        self.counters.add("ledger_arrived")
        if request_id in room:
            self.held[request_id] = verdict.admitted
        else:
            self._owe(request_id)  # left while it was arriving

    async def ask_again(self, request_id: str, room: WaitingRoom[RequestHandle]) -> bool:
        """The oldest local waiter asks again; True when it now holds a permit."""
        admitted = await self.ledger.retry(request_id)
        if request_id in self.held:
            self.held[request_id] = admitted
        elif admitted and request_id not in room:
            # It left while asking and its leave may have reached the ledger
            # first: give back the permit this answer created (leave is idempotent).
            self._owe(request_id)
        return admitted

    async def next_owed(self) -> str:
        request_id: str = await self._receive.receive()
        return request_id

    def owed_nowait(self) -> str:
        """The oldest queued leave; raises ``trio.WouldBlock`` when none is queued."""
        request_id: str = self._receive.receive_nowait()
        return request_id

    def close(self) -> None:
        """No more leaves: ``send_leaves``, if still running, ends once it has sent all."""
        self._send.close()

    def held_ids(self) -> list[str]:
        """Every id still holding a place or permit (for ``return_all``)."""
        return list(self.held)


async def send_leaves(gate: LedgerGate) -> None:
    """Service: give back owed places and permits, oldest first.

    Supervised: an ``OSError`` from the ledger restarts it and the id it was sending
    stays owed, so it is sent again first (``leave`` is idempotent).
    """
    while True:
        if gate.sending is None:
            try:
                gate.sending = await gate.next_owed()
            except trio.EndOfChannel:
                return
        await gate.ledger.leave(gate.sending)
        gate.sending = None
        gate.counters.add("ledger_leaves_sent")
        gate.counters.level("ledger_leaves_owed", gate.owed)


async def return_all(gate: LedgerGate, bound_s: float) -> None:
    """The engine has stopped: give back everything still owed or held, shielded and
    within ``bound_s``; the rest is left to the ledger's lease expiry."""
    owed: list[str] = [] if gate.sending is None else [gate.sending]
    while True:
        try:
            owed.append(gate.owed_nowait())
        except trio.WouldBlock:
            break
    owed.extend(gate.held_ids())
    gate.held.clear()
    gate.sending = None
    # Nothing may owe after this: a late give-back would be a bug, and should say so.
    gate.close()
    sent = 0
    with trio.CancelScope(shield=True), trio.move_on_after(bound_s):
        for request_id in owed:
            await gate.ledger.leave(request_id)
            sent += 1
    gate.counters.add("ledger_leaves_sent", sent)
    gate.counters.add("ledger_leaves_abandoned", len(owed) - sent)
    gate.counters.level("ledger_leaves_owed", 0)
