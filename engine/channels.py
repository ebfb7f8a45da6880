"""The one factory for memory channels, so every buffer has a name.

``ChannelRegistry.open(name, size)`` creates a trio memory channel and
remembers its receive end under ``name``. Per-request channels (one outbound
buffer per request) share a name; their statistics are summed, and a channel
that has been garbage-collected drops out by itself (weak references), so
the registry cannot grow with finished requests.

Trio's channels do not record a high-water mark, and reading one on every
send would cost more than the send itself, so ``peak_buffer_used`` is the
highest occupancy that any ``statistics()`` call has seen: as exact as the
sampling is frequent (the telemetry sampler and the bench sample on a timer).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import trio

__all__ = ["ChannelRegistry", "ChannelStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStats:
    """Occupancy of every live channel with one name, summed."""

    current_buffer_used: int
    max_buffer_size: int
    tasks_waiting_send: int
    tasks_waiting_receive: int
    #: The highest summed occupancy seen by any ``statistics()`` call so far (sampled).
    peak_buffer_used: int
    instances: int


class ChannelRegistry:
    """Creates named, bounded channels and reports on them."""

    def __init__(self) -> None:
        self._channels: dict[str, weakref.WeakSet[trio.MemoryReceiveChannel[Any]]] = {}
        self._sizes: dict[str, int] = {}
        self._peaks: dict[str, int] = {}

    def open(
        self, name: str, size: int
    ) -> tuple[trio.MemorySendChannel[Any], trio.MemoryReceiveChannel[Any]]:
        """A new bounded channel registered under ``name``.

        Callers annotate the result with the channel's message type, e.g.
        ``send: trio.MemorySendChannel[FetchOut]``.
        """
        if size < 0 or size != int(size):
            raise ValueError(f"channel {name!r}: size must be a whole number >= 0, not {size!r}")
        send, receive = trio.open_memory_channel[Any](size)
        self._channels.setdefault(name, weakref.WeakSet()).add(receive)
        self._sizes[name] = size
        return send, receive

    def statistics(self) -> dict[str, ChannelStats]:
        """Per name: buffer use, bound, waiting tasks, sampled peak, live instances."""
        report: dict[str, ChannelStats] = {}
        for name, channels in self._channels.items():
            used = bound = senders = receivers = count = 0
            for channel in list(channels):
                stats = channel.statistics()
                if stats.open_receive_channels == 0 and stats.current_buffer_used == 0:
                    continue  # closed and drained: no longer a buffer
                count += 1
                used += stats.current_buffer_used
                bound += int(stats.max_buffer_size)
                senders += stats.tasks_waiting_send
                receivers += stats.tasks_waiting_receive
            peak = self._peaks[name] = max(self._peaks.get(name, 0), used)
            report[name] = ChannelStats(
                current_buffer_used=used,
                max_buffer_size=bound if count else self._sizes[name],
                tasks_waiting_send=senders,
                tasks_waiting_receive=receivers,
                peak_buffer_used=peak,
                instances=count,
            )
        return report
