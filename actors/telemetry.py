"""The telemetry sampler actor and the hub that fans its frames out.

``telemetry_sampler(hub)`` calls ``Engine.statistics()`` (through the hub)
every ``interval_s``, turns the sample into a frame
(``actors.telemetry_core``), keeps it in the hub's ring and offers it to
every subscriber. Subscribers are the telemetry server's WebSocket
connections, or anything else that wants live frames::

    statistics() ─▶ [sampler] ─▶ hub ─┬─ telemetry.ring (last ring_size frames)
                                      ├─ telemetry.subscriber ─▶ WebSocket client 1
                                      └─ telemetry.subscriber ─▶ WebSocket client 2 ...

**A slow subscriber never slows the sampler.** Delivery is
``send_nowait``: when a subscriber's channel is full, that frame is dropped
*for that subscriber only* and counted (its ``dropped``, and the hub's
``dropped_total``). The sampler never awaits a subscriber.

Owns: the ``TelemetryHub`` — its ring (bounded by ``ring_size``) and the
send end of every subscriber channel (``subscriber_buffer`` frames each, at
most ``max_subscribers`` of them). The channels come from the hub's own
``ChannelRegistry``, so their occupancy is reported in every frame's
``telemetry`` section the same way the engine reports its channels. A
subscriber owns its receive end (``Subscription``).

On cancellation (or any exit) the sampler closes the hub, synchronously:
every subscriber channel is closed, so each subscriber's ``async for``
ends after the frames already queued, and new subscriptions are refused
with ``EngineClosed``. It holds nothing else that needs cleaning up.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import trio

from orpipe.actors.telemetry_core import (
    BreakerSources,
    Frame,
    FrameRing,
    HubCounters,
    TelemetrySettings,
    build_frame,
)
from orpipe.engine.channels import ChannelRegistry
from orpipe.engine.errors import AdmissionRejected, EngineClosed
from orpipe.engine.statistics import EngineStatistics

__all__ = ["Subscription", "TelemetryHub", "telemetry_sampler"]

_SUBSCRIBER_CHANNEL = "telemetry.subscriber"


class _ClosedOnExit:
    """``with x:`` closes ``x`` on the way out, however the block ends."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscription(_ClosedOnExit):
    """One subscriber: the ring's frames when it joined, then live frames.

    Owns the receive end of its ``telemetry.subscriber`` channel. Use it as a
    context manager (or call ``close``): leaving it unsubscribes at once, so
    the hub stops offering frames to it. Iterating yields live frames until
    the hub closes.
    """

    __slots__ = ("_hub", "dropped", "frames", "history")

    def __init__(
        self,
        hub: TelemetryHub,
        history: tuple[Frame, ...],
        frames: trio.MemoryReceiveChannel[Frame],
    ) -> None:
        self._hub = hub
        #: Frames already in the ring when this subscription started, oldest first.
        self.history = history
        self.frames = frames
        #: Live frames this subscriber missed because its buffer was full.
        self.dropped = 0

    def close(self) -> None:
        self._hub._unsubscribe(self)
        self.frames.close()

    def __aiter__(self) -> AsyncIterator[Frame]:
        return self.frames.__aiter__()


class TelemetryHub(_ClosedOnExit):
    """Samples the engine into frames, keeps the recent ones, fans them out.

    ``statistics`` is ``Engine.statistics`` (any callable returning
    ``EngineStatistics``); ``breakers`` adds named breaker counts (for example
    the Open WebUI pipe's ``UserBreaker.statistics``), which the engine's own
    statistics do not carry. Frames are shared between the ring and every
    subscriber: treat them as read-only.
    """

    def __init__(
        self,
        statistics: Callable[[], EngineStatistics],
        settings: TelemetrySettings | None = None,
        *,
        breakers: BreakerSources | None = None,
    ) -> None:
        self.settings = settings or TelemetrySettings()
        self._statistics = statistics
        self._breakers: BreakerSources = dict(breakers or {})
        self._ring = FrameRing(self.settings.ring_size)
        self._channels = ChannelRegistry()
        # Bounded: subscribe() refuses the (max_subscribers + 1)-th.
        self._subscribers: dict[Subscription, trio.MemorySendChannel[Frame]] = {}
        self.counters = HubCounters()
        self._started_at: float | None = None
        self._closed = False

    # -- sampling -------------------------------------------------------------------

    def snapshot(self) -> Frame:
        """A fresh frame that is not published (``seq`` is None): for ``/metrics``."""
        return self._frame(seq=None)

    def tick(self) -> Frame:
        """Sample, keep the frame in the ring and offer it to every subscriber."""
        frame = self._frame(seq=self.counters.frames_total + 1)
        self.publish(frame)
        return frame

    def publish(self, frame: Frame) -> None:
        """Keep ``frame`` and offer it to each subscriber without ever waiting."""
        self.counters.frames_total += 1
        self._ring.push(frame)
        for subscription, send in list(self._subscribers.items()):
            try:
                send.send_nowait(frame)
            except trio.WouldBlock:
                subscription.dropped += 1
                self.counters.dropped_total += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The subscriber closed its end without unsubscribing (or is closing now).
                self._unsubscribe(subscription)

    def recent(self) -> tuple[Frame, ...]:
        """The ring: the last ``ring_size`` published frames, oldest first."""
        return self._ring.recent()

    # -- subscribers ----------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """A new subscription, starting with the ring's history.

        Raises ``AdmissionRejected`` when ``max_subscribers`` are connected and
        ``EngineClosed`` once the hub is closed.
        """
        if self._closed:
            raise EngineClosed("Telemetry has stopped (the engine is shutting down).")
        if len(self._subscribers) >= self.settings.max_subscribers:
            self.counters.subscribers_refused_total += 1
            raise AdmissionRejected(
                self.settings.interval_s,
                message=(
                    f"Too many telemetry subscribers ({self.settings.max_subscribers}); "
                    "close another dashboard or raise max_subscribers."
                ),
            )
        send, receive = self._channels.open(_SUBSCRIBER_CHANNEL, self.settings.subscriber_buffer)
        subscription = Subscription(self, self._ring.recent(), receive)
        self._subscribers[subscription] = send
        self.counters.subscribers_total += 1
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        send = self._subscribers.pop(subscription, None)
        if send is not None:
            send.close()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # -- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """End every subscription (after what is queued) and refuse new ones."""
        self._closed = True
        for subscription in list(self._subscribers):
            self._unsubscribe(subscription)

    # -- observation ----------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """The hub's own buffers and counters (a frame's ``telemetry`` section)."""
        buffers = self._channels.statistics().get(_SUBSCRIBER_CHANNEL)
        report: dict[str, Any] = dict(self.counters.as_dict())
        report.update(
            ring_frames=len(self._ring),
            ring_size=self._ring.size,
            ring_evicted_total=self._ring.evicted,
            subscribers=len(self._subscribers),
            max_subscribers=self.settings.max_subscribers,
            subscriber_buffer_size=self.settings.subscriber_buffer,
            subscriber_buffers_used=buffers.current_buffer_used if buffers else 0,
            subscriber_buffers_peak=buffers.peak_buffer_used if buffers else 0,
        )
        return report

    def _frame(self, *, seq: int | None) -> Frame:
        now = trio.current_time()
        if self._started_at is None:
            self._started_at = now
        return build_frame(
            self._statistics(),
            seq=seq,
            t=now - self._started_at,
            unix_s=time.time(),
            interval_s=self.settings.interval_s,
            breakers=self._breakers,
            telemetry=self.statistics(),
        )


async def telemetry_sampler(
    hub: TelemetryHub, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Publish one frame now and then one every ``interval_s`` until cancelled.

    Ticks are scheduled on a fixed grid (``sleep_until``), so the interval
    does not drift by the time sampling takes. If the loop falls more than
    one interval behind (an overloaded event loop), the missed ticks are
    skipped and counted (``ticks_skipped_total``), never replayed in a burst.
    """
    interval = hub.settings.interval_s
    with hub:
        hub.tick()
        task_status.started()
        deadline = trio.current_time()
        while True:
            deadline += interval
            now = trio.current_time()
            if now > deadline:
                missed = math.ceil((now - deadline) / interval)
                hub.counters.ticks_skipped_total += missed
                deadline += missed * interval
            await trio.sleep_until(deadline)
            hub.tick()
