"""Restores sequence order for one request. Synchronous core of the reorderer.

Items arrive as ranges ``[first_seq, first_seq + count)``; an ending has
``count == 0`` at one past the last event. ``offer`` returns whatever became
releasable, in order. It cannot wait forever: the parser turns every
sequence number into an event or a ``ParseFailed``, and the ending's number
comes after all of them.

The window is bounded: an item reaching past ``capacity`` events beyond the
next expected number is refused (``WindowOverflow``). The fetcher's credit
window (``engine.flow``) keeps a request's in-flight events within the same
capacity, so a refusal means a bug, not load.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["ReorderError", "ReorderWindow", "WindowOverflow"]

T = TypeVar("T")


class ReorderError(Exception):
    """An item that can never be placed (duplicate or already released)."""


class WindowOverflow(ReorderError):
    """An item beyond the window's capacity."""


class ReorderWindow(Generic[T]):
    __slots__ = ("_held", "capacity", "held_events", "next_seq")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.next_seq = 0
        self.held_events = 0
        self._held: dict[int, tuple[int, T]] = {}

    @property
    def held(self) -> int:
        """Items waiting for an earlier one."""
        return len(self._held)

    def offer(self, first_seq: int, count: int, item: T) -> list[T]:
        if first_seq < self.next_seq or first_seq in self._held:
            raise ReorderError(f"sequence {first_seq} was already seen")
        if first_seq + count - self.next_seq > self.capacity:
            raise WindowOverflow(
                f"sequence {first_seq}+{count} is beyond the window "
                f"[{self.next_seq}, {self.next_seq + self.capacity})"
            )
        for held_seq, (held_count, _) in self._held.items():
            if held_seq < first_seq + count and first_seq < held_seq + held_count:
                raise ReorderError(
                    f"sequence {first_seq}+{count} overlaps {held_seq}+{held_count}, already held"
                )
        if first_seq != self.next_seq:
            self._held[first_seq] = (count, item)
            self.held_events += count
            return []
        released = [item]
        self.next_seq += count
        while self.next_seq in self._held:
            count, item = self._held.pop(self.next_seq)
            self.held_events -= count
            released.append(item)
            # A zero-count item (the ending) at this number leaves next_seq
            # unchanged; nothing can follow it, so the loop ends.
            if count == 0:
                break
            self.next_seq += count
        return released
