"""Every worker's latest telemetry frame in Redis, and all live workers' frames read back. Trio.

Open WebUI runs one engine per worker process; each worker's telemetry
server should show them all. ``WorkerFrames`` publishes this worker's
newest frame and reads every live worker's, through the write-behind's
Redis door (``adapters.store.redis_link.RedisLink``: redis-py in worker
threads, errors translated, the URL's password never shown). Layout, under
``prefix`` (default ``orpipe:telemetry``)::

    {prefix}:frame:{worker}  the worker's newest frame (JSON), SET with PX = ttl_s:
                             a worker that stops disappears when its key expires
    {prefix}:workers         sorted set, worker id -> last publish (unix ms): only an
                             index of keys to read; members older than
                             ``INDEX_KEEP_TTLS`` TTLs are trimmed on every publish

Nothing is queued: each publish overwrites the previous frame, so Redis
holds one frame per live worker (at most ``max_frame_bytes`` each; a larger
frame is not published and is counted), and a read takes at most
``max_workers`` workers, newest first. The worker id is ``host:pid``.

``publish_frames(hub, frames)`` is the publishing task: one hub subscriber
(so a slow Redis drops frames for it, counted by the hub, and never slows
the sampler) that writes each frame it gets. A failing Redis is counted and
told once in the log (and once when it recovers); it never stops the task.
On cancellation it unsubscribes; a write in progress finishes first
(``RedisLink`` never abandons a call), bounded by the socket timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import msgspec

from orpipe.actors.telemetry import TelemetryHub
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.engine.errors import PersistenceError

__all__ = ["INDEX_KEEP_TTLS", "FanInCounters", "WorkerFrames", "publish_frames", "worker_id"]

log = logging.getLogger("orpipe.telemetry")

#: Index members are kept this many TTLs after their last publish: a margin for
#: clocks that differ between hosts (the frame key's own TTL decides liveness).
INDEX_KEEP_TTLS = 10


def worker_id() -> str:
    """This process as a worker: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class FanInCounters:
    """What the fan-in did (a frame's ``fanin`` section, ``orpipe_fanin_*``)."""

    published_total: int = 0
    publish_errors_total: int = 0
    oversize_total: int = 0
    read_errors_total: int = 0
    unreadable_frames_total: int = 0
    #: Live workers found by the last read (this one included).
    workers_seen: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class WorkerFrames:
    """Publishes this worker's frames to Redis and reads every live worker's."""

    def __init__(
        self,
        link: RedisLink,
        *,
        ttl_s: float,
        prefix: str = "orpipe:telemetry",
        worker: str | None = None,
        max_workers: int = 64,
        max_frame_bytes: int = 64 * 1024,
    ) -> None:
        self.link = link
        self.worker = worker or worker_id()
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.prefix = prefix
        self.max_workers = max_workers
        self.max_frame_bytes = max_frame_bytes
        self.counters = FanInCounters()
        self._index = f"{prefix}:workers".encode()

    def _frame_key(self, worker: str) -> bytes:
        return f"{self.prefix}:frame:{worker}".encode()

    def statistics(self) -> dict[str, int]:
        return self.counters.as_dict()

    async def publish(self, frame: Mapping[str, Any]) -> None:
        """Write ``frame`` as this worker's newest (with the fan-in's own counters).

        Raises ``PersistenceError`` when Redis fails (counted).
        """
        data = msgspec.json.encode({**frame, "fanin": self.statistics()})
        if len(data) > self.max_frame_bytes:
            self.counters.oversize_total += 1
            return
        now_ms = int(time.time() * 1000)
        key, index = self._frame_key(self.worker), self._index
        keep_ms = self.ttl_ms * INDEX_KEEP_TTLS

        def write() -> None:
            pipe = self.link.client.pipeline(transaction=False)
            pipe.set(key, data, px=self.ttl_ms)
            pipe.zadd(index, {self.worker: now_ms})
            pipe.zremrangebyscore(index, "-inf", now_ms - keep_ms)
            pipe.pexpire(index, keep_ms)
            pipe.execute()

        try:
            await self.link.call(write, "publishing a telemetry frame")
        except PersistenceError:
            self.counters.publish_errors_total += 1
            raise
        self.counters.published_total += 1

    async def live(self) -> dict[str, dict[str, Any]]:
        """Every live worker's newest frame, by worker id (newest publishers first, at
        most ``max_workers``). Raises ``PersistenceError`` when Redis fails (counted)."""
        index, limit = self._index, self.max_workers

        def read() -> list[tuple[bytes, bytes | None]]:
            # RESP2 and no decoding (redis_link): names and values are bytes.
            names = cast("list[bytes]", self.link.client.zrevrange(index, 0, limit - 1))
            if not names:
                return []
            values = cast(
                "list[bytes | None]",
                self.link.client.mget([self._frame_key(n.decode()) for n in names]),
            )
            return list(zip(names, values, strict=True))

        try:
            rows = await self.link.call(read, "reading the workers' telemetry")
        except PersistenceError:
            self.counters.read_errors_total += 1
            raise
        frames: dict[str, dict[str, Any]] = {}
        for name, value in rows:
            if value is None:
                continue  # its key expired: that worker stopped
            try:
                frame = msgspec.json.decode(value)
            except msgspec.DecodeError:
                self.counters.unreadable_frames_total += 1
                continue
            if isinstance(frame, dict):
                frames[name.decode()] = frame
        self.counters.workers_seen = len(frames)
        return frames

    async def everyone(self, own: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Every live worker's frame, with ``own`` (sampled fresh) as this worker's.

        Redis unreachable (or failed a moment ago): this worker alone, the failure
        counted in ``read_errors_total``, so a scrape never fails for want of Redis.
        """
        frames: dict[str, dict[str, Any]] = {}
        if not self.link.suspect():
            with contextlib.suppress(PersistenceError):
                frames = await self.live()
        frames[self.worker] = {**own, "fanin": self.statistics()}
        return frames


async def publish_frames(hub: TelemetryHub, frames: WorkerFrames) -> None:
    """Publish every frame the hub offers until cancelled (module doc)."""
    failing = False
    with hub.subscribe() as subscription:
        async for frame in subscription:
            if frames.link.suspect():
                frames.counters.publish_errors_total += 1
                continue  # Redis failed a moment ago: skip rather than wait on a timeout
            try:
                await frames.publish(frame)
            except PersistenceError as exc:
                if not failing:
                    log.warning(
                        "telemetry: cannot publish this worker's frames (%s); other workers' "
                        "/metrics will miss it until Redis answers again",
                        exc.message,
                    )
                failing = True
                continue
            if failing:
                log.info("telemetry: publishing this worker's frames to Redis again")
                failing = False
