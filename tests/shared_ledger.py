"""An in-memory shared admission ledger for tests: several engines in one trio run.

``SharedLedger`` is the shared state (what Redis holds for the real ledger):
``limit`` permits and one FIFO line of at most ``maxsize`` places across every
engine. ``SharedLedger.port(worker)`` is one engine's ``AdmissionLedger``.
Each call is one "round trip": a checkpoint, plus ``round_trip_s`` of trio time
when set (use a MockClock). It records what the tests check: the peak of
permits in use, the order in which permits were granted, and every call.
"""

from __future__ import annotations

import collections

import trio

from orpipe.engine.ports import LedgerVerdict
from orpipe.engine.statistics import LedgerStats

__all__ = ["LedgerPort", "SharedLedger"]


class SharedLedger:
    def __init__(self, *, limit: int, maxsize: int, retry_after_s: float = 3.0) -> None:
        self.limit = limit
        self.maxsize = maxsize
        self.retry_after_s = retry_after_s
        self.round_trip_s = 0.0
        #: Request id -> worker, for permits in use and places in the line (FIFO).
        self.permits: dict[str, str] = {}
        self.line: collections.OrderedDict[str, str] = collections.OrderedDict()
        self.peak_permits = 0
        #: Request ids in the order they got a permit.
        self.granted: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self._changed = trio.Event()

    def port(self, worker: str) -> LedgerPort:
        return LedgerPort(self, worker)

    async def _round_trip(self, call: str, request_id: str) -> None:
        self.calls.append((call, request_id))
        if self.round_trip_s:
            await trio.sleep(self.round_trip_s)
        else:
            await trio.lowlevel.checkpoint()

    def _grant(self, request_id: str, worker: str) -> None:
        self.permits[request_id] = worker
        self.granted.append(request_id)
        self.peak_permits = max(self.peak_permits, len(self.permits))

    def _change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def held_by(self, worker: str) -> tuple[int, int]:
        """(permits, places) this worker holds."""
        permits = sum(1 for w in self.permits.values() if w == worker)
        return permits, sum(1 for w in self.line.values() if w == worker)


class LedgerPort:
    """One engine's view of a ``SharedLedger`` (implements ``engine.ports.AdmissionLedger``)."""

    def __init__(self, shared: SharedLedger, worker: str) -> None:
        self.shared = shared
        self.worker = worker
        self.admitted_total = self.rejected_total = 0
        #: Set to make the next ``run`` raise this once (to test supervision).
        self.fail_run: OSError | None = None
        self.runs = 0

    async def arrive(self, request_id: str) -> LedgerVerdict:
        s = self.shared
        await s._round_trip("arrive", request_id)
        if len(s.permits) < s.limit and not s.line:
            s._grant(request_id, self.worker)
            self.admitted_total += 1
            return LedgerVerdict(admitted=True)
        if len(s.line) < s.maxsize:
            s.line[request_id] = self.worker
            return LedgerVerdict(admitted=False)
        self.rejected_total += 1
        return LedgerVerdict(admitted=False, retry_after_s=s.retry_after_s)

    async def retry(self, request_id: str) -> bool:
        s = self.shared
        await s._round_trip("retry", request_id)
        if request_id in s.permits:
            return True
        free = s.limit - len(s.permits)
        ahead = list(s.line)[:free]  # strict FIFO: only the first `free` places may go
        if request_id not in ahead:
            return False
        del s.line[request_id]
        s._grant(request_id, self.worker)
        self.admitted_total += 1
        s._change()  # the next in line may go too
        return True

    async def leave(self, request_id: str) -> None:
        s = self.shared
        await s._round_trip("leave", request_id)
        had_permit = s.permits.pop(request_id, None) is not None
        had_place = s.line.pop(request_id, None) is not None
        if had_permit or had_place:
            s._change()

    async def wait_for_change(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self.shared._changed.wait()

    async def run(self) -> None:
        self.runs += 1
        if self.fail_run is not None:
            error, self.fail_run = self.fail_run, None
            raise error
        await trio.sleep_forever()

    def statistics(self) -> LedgerStats:
        s = self.shared
        permits, places = s.held_by(self.worker)
        return LedgerStats(
            mode="global",
            limit=s.limit,
            queue_maxsize=s.maxsize,
            local_share=s.limit,
            permits_held=permits,
            places_held=places,
            global_in_use=len(s.permits),
            global_waiting=len(s.line),
            live_workers=1,
            admitted_total=self.admitted_total,
            rejected_total=self.rejected_total,
            fallbacks_total=0,
            errors_total=0,
        )
