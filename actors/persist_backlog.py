"""The persister's synchronous core: what is waiting to be written, and when to retry.

``Backlog`` holds artifacts the persister accepted and the store has not
confirmed yet, oldest first, up to a bound (the persister stops taking new
ones when it is full, so a store outage slows answers instead of losing
data). ``RetryClock`` spaces retries of a failing store with capped
exponential backoff.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from orpipe.engine.artifacts import Artifact
from orpipe.engine.backoff import capped_backoff

__all__ = ["Backlog", "RetryClock"]


class Backlog:
    """Accepted, not yet written artifacts; at most ``limit`` taken in normally."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: collections.deque[Artifact] = collections.deque()
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def room(self) -> int:
        return max(self.limit - len(self._items), 0)

    def add(self, artifacts: Iterable[Artifact]) -> None:
        """Take artifacts in. The bound is the caller's to respect (``room``); a
        final drain on shutdown may exceed it, because nothing accepted is dropped."""
        self._items.extend(artifacts)
        self.peak = max(self.peak, len(self._items))

    def batch(self, size: int) -> list[Artifact]:
        """The oldest ``size`` artifacts, left in place until ``written``."""
        return [self._items[i] for i in range(min(size, len(self._items)))]

    def written(self, count: int) -> None:
        for _ in range(count):
            self._items.popleft()

    def ids(self) -> list[str]:
        return [a.artifact_id for a in self._items]


class RetryClock:
    """Capped exponential backoff between failed writes; reset by a success."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.failures = 0

    def failed(self) -> float:
        """Record a failure; the pause before the next attempt."""
        self.failures += 1
        return capped_backoff(self.failures - 1, base_s=self.initial_s, cap_s=self.max_s)

    def succeeded(self) -> None:
        self.failures = 0
