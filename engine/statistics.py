"""Snapshots of what the engine is doing, for operators and researchers.

``Engine.statistics()`` returns one ``EngineStatistics``: per named channel
its occupancy, bound, waiting tasks and peak; admission counters; the
per-request flow windows; per-actor counters; and supervisor restarts.
Everything is a plain frozen value, so it can be sampled, diffed and
written as JSON (``as_dict``) without touching live state.
"""

from __future__ import annotations

import collections
import dataclasses
from dataclasses import dataclass
from typing import Any

from orpipe.engine.channels import ChannelStats

__all__ = [
    "ActorCounters",
    "AdmissionStats",
    "EngineStatistics",
    "FlowStats",
    "LedgerStats",
]


class ActorCounters:
    """What one actor reports: monotonic counters and current levels.

    ``add("events")`` counts; ``level("held_events", n)`` records how much an
    actor holds right now (per-request state inside a shared stage), shown
    as ``now_held_events``.
    """

    __slots__ = ("_counts", "_levels")

    def __init__(self) -> None:
        self._counts: collections.Counter[str] = collections.Counter()
        self._levels: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        self._counts[name] += amount

    def level(self, name: str, value: int) -> None:
        self._levels[name] = value

    def snapshot(self) -> dict[str, int]:
        report = dict(self._counts)
        report.update({f"now_{name}": value for name, value in self._levels.items()})
        return report


@dataclass(frozen=True, slots=True, kw_only=True)
class AdmissionStats:
    """The waiting room and the concurrency limit."""

    in_flight: int
    waiting: int
    max_concurrent: int
    queue_maxsize: int
    admitted_total: int
    rejected_total: int
    shed_total: int
    withdrawn_total: int
    queue_wait_max_s: float
    queue_wait_total_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerStats:
    """A shared admission ledger (``engine.ports.AdmissionLedger``), as this worker sees it."""

    #: ``global``: the shared limits hold; ``local_share``: the shared state is out of
    #: reach and this worker admits up to ``local_share`` on its own.
    mode: str
    limit: int
    queue_maxsize: int
    local_share: int
    #: Permits and places this worker holds now.
    permits_held: int
    places_held: int
    #: Across all workers, as last seen (-1 before the first look).
    global_in_use: int
    global_waiting: int
    live_workers: int
    admitted_total: int
    rejected_total: int
    #: Times the ledger fell back to ``local_share``, and errors reaching its state.
    fallbacks_total: int
    errors_total: int
    #: Times the shared state was found lost (a restart without persistence, a flush,
    #: an eviction); each holds new admissions back for one lease.
    state_losses_total: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowStats:
    """Per-request credit windows, summed over open requests."""

    open_requests: int
    credits_in_flight: int
    credit_capacity: int
    fetchers_waiting_credit: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineStatistics:
    """One consistent sample of the engine's state."""

    channels: dict[str, ChannelStats]
    admission: AdmissionStats
    flow: FlowStats
    actors: dict[str, dict[str, int]]
    #: Per circuit breaker the engine runs (the tool executor's ``tools``): tracked keys
    #: and how many are closed, open or half-open (``Breaker.statistics``).
    breakers: dict[str, dict[str, int]]
    restarts: dict[str, int]
    endings: dict[str, int]
    #: The per-request log ring (``engine.logs``): requests and lines held, and its bounds.
    logs: dict[str, int] = dataclasses.field(default_factory=dict)
    #: The artifact store's own figures when it reports any (the Redis write-behind:
    #: ``durability`` mode, ``held`` rows, queue length ...); empty otherwise.
    store: dict[str, int | float | str] = dataclasses.field(default_factory=dict)
    #: The shared admission ledger, when the engine was given one.
    ledger: LedgerStats | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, ready for JSON."""
        return dataclasses.asdict(self)
