"""The admission policy: a bounded waiting room before a concurrency limit.

Synchronous core of the admission actor. A request either gets one of
``max_in_flight`` slots or one of ``maxsize`` places in the room; when both
are taken it is rejected at once. Waiting requests are entries in this room
(not parked tasks), so the room — not the number of callers — bounds them,
and a request cancelled while waiting simply leaves (fixing weakness 1 of the
original, whose "queue" spawned a task per request at once).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Generic, TypeVar

from orpipe.engine.errors import AdmissionRejected, EngineClosed
from orpipe.engine.statistics import AdmissionStats

__all__ = ["WaitingRoom"]

T = TypeVar("T")


@dataclass(slots=True)
class _Place(Generic[T]):
    item: T
    entered_at: float
    deadline: float


class WaitingRoom(Generic[T]):
    """FIFO room keyed by request id, in front of ``max_in_flight`` slots."""

    def __init__(self, *, max_in_flight: int, maxsize: int, retry_after_s: float) -> None:
        self.max_in_flight = max_in_flight
        self.maxsize = maxsize
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.closed = False
        self._places: collections.OrderedDict[str, _Place[T]] = collections.OrderedDict()
        self._admitted = self._rejected = self._shed = self._withdrawn = 0
        self._wait_max = self._wait_total = 0.0

    @property
    def waiting(self) -> int:
        return len(self._places)

    def __contains__(self, key: str) -> bool:
        return key in self._places

    def enter(self, key: str, item: T, *, now: float, deadline: float, reserved: int = 0) -> None:
        """Take a place, or raise ``AdmissionRejected`` (full) / ``EngineClosed``.

        ``reserved`` places are still taken by requests that have left but whose
        shared-ledger permit or place is not given back yet (``actors.admission_ledger``).
        """
        if self.closed:
            raise EngineClosed()
        free_slots = max(0, self.max_in_flight - self.in_flight)
        if len(self._places) + reserved >= self.maxsize + free_slots:
            self._rejected += 1
            raise AdmissionRejected(self.retry_after_s)
        self._places[key] = _Place(item, now, deadline)

    def withdraw(self, key: str) -> T | None:
        """Remove a waiting entry (cancelled); None if it is not waiting."""
        place = self._places.pop(key, None)
        self._withdrawn += place is not None
        return None if place is None else place.item

    def refuse(self, key: str) -> T | None:
        """Remove a waiting entry the shared ledger refused (counted as rejected)."""
        place = self._places.pop(key, None)
        self._rejected += place is not None
        return None if place is None else place.item

    def oldest(self) -> str | None:
        """The key of the oldest waiting entry (the next ``admit_next`` takes it)."""
        return next(iter(self._places), None)

    def admit_next(self, now: float) -> T | None:
        """The oldest waiting entry if a slot is free (taking the slot)."""
        if self.in_flight >= self.max_in_flight or not self._places:
            return None
        _, place = self._places.popitem(last=False)
        self.in_flight += 1
        self._admitted += 1
        waited = now - place.entered_at
        self._wait_total += waited
        self._wait_max = max(self._wait_max, waited)
        return place.item

    def release(self) -> None:
        """An admitted entry finished."""
        if self.in_flight <= 0:
            raise RuntimeError("admission accounting bug: release without an admitted request")
        self.in_flight -= 1

    def expired(self, now: float, queue_deadline_s: float | None) -> list[tuple[T, float, bool]]:
        """Remove entries past the queue deadline or their own deadline.

        Returns ``(item, waited_s, shed)``: ``shed`` is True for the queue
        deadline, False when the request's own deadline passed.
        """
        # Entries are FIFO and both deadlines are "entry time + a constant",
        # so the oldest entry always expires first: stop at the first live one.
        out: list[tuple[T, float, bool]] = []
        while self._places:
            key, place = next(iter(self._places.items()))
            waited = now - place.entered_at
            shed = queue_deadline_s is not None and waited >= queue_deadline_s
            if not (shed or now >= place.deadline):
                break
            del self._places[key]
            self._shed += shed
            out.append((place.item, waited, shed))
        return out

    def next_expiry(self, queue_deadline_s: float | None) -> float:
        """When ``expired`` may next return something (inf if never)."""
        if not self._places:
            return float("inf")
        oldest = next(iter(self._places.values()))  # expires first (see ``expired``)
        if queue_deadline_s is None:
            return oldest.deadline
        return min(oldest.deadline, oldest.entered_at + queue_deadline_s)

    def close(self) -> list[T]:
        """Take no more entries; returns (and removes) the ones still waiting."""
        self.closed = True
        items = [place.item for place in self._places.values()]
        self._places.clear()
        return items

    def statistics(self) -> AdmissionStats:
        return AdmissionStats(
            in_flight=self.in_flight,
            waiting=len(self._places),
            max_concurrent=self.max_in_flight,
            queue_maxsize=self.maxsize,
            admitted_total=self._admitted,
            rejected_total=self._rejected,
            shed_total=self._shed,
            withdrawn_total=self._withdrawn,
            queue_wait_max_s=self._wait_max,
            queue_wait_total_s=self._wait_total,
        )
