"""The telemetry sampler's synchronous core: settings, frames and the frame ring.

A *frame* is one sample of ``Engine.statistics()`` as plain JSON data (str
keys; str, int, float, bool or None leaves; one level of sections), so it
can be sent over a WebSocket, drawn, diffed or stored without touching live
state. Every number in it comes from a statistics call; nothing is derived
except where a key says so (``persister`` repeats the persister's own
levels under short names). The sections::

    seq          int, 1, 2, ... per published frame; None for an on-demand snapshot
    t            seconds on the trio clock since the hub started
    unix_s       wall-clock time of the sample (for humans and plots)
    interval_s   the sampling interval
    channels     per channel name: current_buffer_used, max_buffer_size,
                 tasks_waiting_send, tasks_waiting_receive, peak_buffer_used, instances
    admission    in_flight, waiting, max_concurrent, queue_maxsize, admitted_total,
                 rejected_total, shed_total, withdrawn_total, queue_wait_max_s,
                 queue_wait_total_s
    flow         open_requests, credits_in_flight, credit_capacity, fetchers_waiting_credit
    actors       per actor: its counters, and its levels as now_<name>
    persister    backlog, backlog_peak, degraded (from the persister's levels; empty
                 when the engine has no artifact store)
    breakers     per breaker: its statistics (tracked, closed, open, half_open, ...);
                 the engine's own (``tools``) and any source handed to the hub
                 (the Open WebUI adapter's ``user``)
    restarts     per supervised service: restarts
    endings      per ending type: requests ended that way
    logs         the per-request log ring: requests and lines held, and its bounds
    ledger       the shared admission ledger's statistics (``LedgerStats``: mode, limit,
                 permits and places held, global figures, ...); None without a ledger
    telemetry    the hub itself: frames, ring, subscribers, drops (see ``HubCounters``)

Nothing here awaits or reads a clock: the async shell (``actors.telemetry``)
passes the times in, so this module is tested without trio.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orpipe.engine.errors import ConfigError
from orpipe.engine.statistics import EngineStatistics

__all__ = [
    "BreakerSources",
    "Frame",
    "FrameRing",
    "HubCounters",
    "TelemetrySettings",
    "build_frame",
]

#: One sample as JSON-able data (see the module docstring for its sections).
Frame = dict[str, Any]

#: Named callables returning a breaker's counts (``Breaker.statistics``), e.g. ``{"user": ...}``.
BreakerSources = Mapping[str, Callable[[], Mapping[str, int]]]

#: The persister's levels (``ActorCounters.level``) that the ``persister`` section repeats.
_PERSISTER_LEVELS = ("backlog", "backlog_peak", "degraded")


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySettings:
    """Knobs of the telemetry hub; every buffer it owns is sized here.

    ``interval_s``: time between samples. ``ring_size``: frames kept for late
    subscribers (the ``telemetry.ring``). ``subscriber_buffer``: frames queued per
    subscriber (``telemetry.subscriber`` channels) before new frames are dropped for
    it. ``max_subscribers``: subscribers at once; one more is refused.
    """

    interval_s: float = 1.0
    ring_size: int = 300
    subscriber_buffer: int = 16
    max_subscribers: int = 32

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ConfigError("telemetry.interval_s", self.interval_s, "a number > 0")
        if self.ring_size < 1:
            raise ConfigError("telemetry.ring_size", self.ring_size, "a whole number >= 1")
        if self.subscriber_buffer < 0:
            raise ConfigError(
                "telemetry.subscriber_buffer", self.subscriber_buffer, "a whole number >= 0"
            )
        if self.max_subscribers < 1:
            raise ConfigError(
                "telemetry.max_subscribers", self.max_subscribers, "a whole number >= 1"
            )


class FrameRing:
    """The last ``size`` published frames, oldest first (the ``telemetry.ring`` buffer).

    Bounded by construction (``deque(maxlen=...)``): a new frame pushes out the oldest.
    """

    __slots__ = ("_frames", "evicted")

    def __init__(self, size: int) -> None:
        self._frames: collections.deque[Frame] = collections.deque(maxlen=size)
        self.evicted = 0

    def push(self, frame: Frame) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.evicted += 1
        self._frames.append(frame)

    def recent(self) -> tuple[Frame, ...]:
        return tuple(self._frames)

    def latest(self) -> Frame | None:
        return self._frames[-1] if self._frames else None

    @property
    def size(self) -> int:
        assert self._frames.maxlen is not None
        return self._frames.maxlen

    def __len__(self) -> int:
        return len(self._frames)


@dataclass(slots=True, kw_only=True)
class HubCounters:
    """The hub's own counters; ``as_dict`` is the frame's ``telemetry`` section."""

    frames_total: int = 0
    #: Frames not delivered to one subscriber because its buffer was full (summed).
    dropped_total: int = 0
    subscribers_total: int = 0
    #: Subscriptions refused because ``max_subscribers`` were already connected.
    subscribers_refused_total: int = 0
    #: Ticks skipped because sampling fell more than one interval behind.
    ticks_skipped_total: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def build_frame(
    stats: EngineStatistics,
    *,
    seq: int | None,
    t: float,
    unix_s: float,
    interval_s: float,
    breakers: BreakerSources,
    telemetry: Mapping[str, Any],
) -> Frame:
    """One frame from one statistics sample (see the module docstring)."""
    sample = stats.as_dict()
    persister_levels = stats.actors.get("persister", {})
    return {
        "seq": seq,
        "t": t,
        "unix_s": unix_s,
        "interval_s": interval_s,
        "channels": sample["channels"],
        "admission": sample["admission"],
        "flow": sample["flow"],
        "actors": sample["actors"],
        "persister": {
            name: persister_levels[f"now_{name}"]
            for name in _PERSISTER_LEVELS
            if f"now_{name}" in persister_levels
        },
        "breakers": _breaker_section(sample["breakers"], breakers),
        "restarts": sample["restarts"],
        "endings": sample["endings"],
        "logs": sample["logs"],
        "ledger": sample["ledger"],
        "telemetry": dict(telemetry),
    }


def _breaker_section(
    engine_breakers: Mapping[str, Mapping[str, int]], extra: BreakerSources
) -> dict[str, dict[str, int]]:
    """The engine's breakers and the hub's extra sources, by name (a name used twice is a bug)."""
    clash = engine_breakers.keys() & extra.keys()
    if clash:
        raise ValueError(f"breaker names {sorted(clash)} are both the engine's and handed in")
    section = {name: dict(counts) for name, counts in engine_breakers.items()}
    section.update({name: dict(source()) for name, source in extra.items()})
    return dict(sorted(section.items()))
