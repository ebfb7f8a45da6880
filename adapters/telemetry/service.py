"""The telemetry of an engine inside Open WebUI: sampler, Redis fan-in and server. Trio.

``TelemetryService(plan)`` is what the bridge runs beside each engine
generation (``bridge.protocol.SideService``): called with the engine's
``statistics``, it runs until cancelled and never raises, because telemetry
trouble must never take the Function down. It runs:

* the sampler (``actors.telemetry``), one frame every ``interval_s``;
* with a Redis URL, the publisher (``fan_in.publish_frames``): this worker's
  frames go to Redis, so any worker's server shows them;
* the server (``server.serve_telemetry``) on ``host:port`` (its WebSocket on
  ``port + 1``), with the bearer token when one is set. Several workers of one
  host share the port: the first to bind serves, the others say so once in
  the log and try again, backing off to every ``rebind_s`` (their frames
  still reach the serving one through Redis; without Redis each worker needs
  its own port). The same retry lets a new engine generation take the port
  over from the one it replaces (which stops serving when it retires): the
  first retry comes soon and the log stays quiet unless it fails too. Any
  other failure to serve is logged once and the server stays off; the
  engine keeps running.

Owns: the hub (its ring and subscriber channels, bounded by
``TelemetrySettings``), the Redis link of the fan-in (closed on the way out)
and the listeners. On cancellation everything stops: the listeners close,
the hub refuses new subscribers, a Redis call in progress finishes first.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from orpipe.actors.telemetry import TelemetryHub, telemetry_sampler
from orpipe.actors.telemetry_core import TelemetrySettings
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.adapters.telemetry.fan_in import WorkerFrames, publish_frames
from orpipe.adapters.telemetry.server import (
    TelemetryEndpoints,
    TelemetryServerSettings,
    serve_telemetry,
)
from orpipe.engine.backoff import capped_backoff
from orpipe.engine.errors import EngineError
from orpipe.engine.statistics import EngineStatistics

__all__ = ["DASHBOARD_DIR", "TelemetryPlan", "TelemetryService"]

log = logging.getLogger("orpipe.telemetry")

#: The dashboard's files, shipped with the package (``orpipe/bench/dashboard``); found
#: by path, so this world imports nothing from the bench.
DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "bench" / "dashboard"


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryPlan:
    """Where the telemetry listens and where its frames go (from the valves)."""

    host: str = "127.0.0.1"
    #: The HTTP port (``/metrics``, the dashboard); the WebSocket is on ``port + 1``.
    port: int = 9464
    token: str | None = field(default=None, repr=False)
    #: None: this worker alone (no fan-in).
    redis_url: str | None = field(default=None, repr=False)
    interval_s: float = 1.0
    #: A worker's frame expires after this many intervals without a new one.
    ttl_intervals: int = 3
    prefix: str = "orpipe:telemetry"
    rebind_s: float = 5.0
    dashboard_dir: Path | None = DASHBOARD_DIR

    def key(self) -> tuple[object, ...]:
        """What tells two plans apart, the secrets only as a keyed hash (for the
        runtime's fingerprint: an equal key needs no new engine generation)."""
        secret = f"{self.token or ''}\0{self.redis_url or ''}".encode()
        digest = hashlib.blake2b(secret, key=b"orpipe-telemetry", digest_size=16).hexdigest()
        return (self.host, self.port, self.interval_s, self.ttl_intervals, self.prefix, digest)


class TelemetryService:
    """``await TelemetryService(plan)(statistics)``: the module doc's services, until
    cancelled. Equal plans make equal services (the runtime compares them)."""

    def __init__(self, plan: TelemetryPlan) -> None:
        self.plan = plan

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TelemetryService) and other.plan.key() == self.plan.key()

    def __hash__(self) -> int:
        return hash(self.plan.key())

    def __repr__(self) -> str:
        return f"TelemetryService(host={self.plan.host!r}, port={self.plan.port})"

    async def __call__(self, statistics: Callable[[], EngineStatistics]) -> None:
        plan = self.plan
        hub = TelemetryHub(statistics, TelemetrySettings(interval_s=plan.interval_s))
        frames: WorkerFrames | None = None
        try:
            if plan.redis_url:
                frames = WorkerFrames(
                    RedisLink(plan.redis_url),
                    ttl_s=plan.interval_s * plan.ttl_intervals,
                    prefix=plan.prefix,
                )
            async with trio.open_nursery() as nursery:
                await nursery.start(telemetry_sampler, hub)
                if frames is not None:
                    nursery.start_soon(publish_frames, hub, frames)
                nursery.start_soon(self._serve, hub, frames)
        except Exception as exc:
            log.error(
                "telemetry stopped (%s); the Function keeps working without it", _describe(exc)
            )
        finally:
            if frames is not None:
                frames.link.close()

    async def _serve(self, hub: TelemetryHub, frames: WorkerFrames | None) -> None:
        plan = self.plan
        settings = TelemetryServerSettings(
            host=plan.host,
            http_port=plan.port,
            ws_port=plan.port + 1 if plan.port else 0,
            dashboard_dir=plan.dashboard_dir,
            token=plan.token,
        )
        told_in_use = False
        attempt = 0
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    endpoints: TelemetryEndpoints = await nursery.start(
                        functools.partial(serve_telemetry, hub, settings, workers=frames)
                    )
                    log.info(
                        "telemetry: /metrics at %s, dashboard at %s/",
                        endpoints.metrics_url,
                        endpoints.http_url,
                    )
            except Exception as exc:
                error = _innermost(exc)
                if not (isinstance(error, OSError) and error.errno == errno.EADDRINUSE):
                    raise
                # The first failure is often a generation handing the port over: quiet.
                if attempt >= 1 and not told_in_use:
                    log.warning(
                        "telemetry: port %d or %d on %s is in use (another worker of this "
                        "host may be serving it%s); this worker keeps trying (every %.0f s at "
                        "most) and keeps answering chats meanwhile",
                        settings.http_port,
                        settings.ws_port,
                        plan.host,
                        ", and it shows this worker's frames too" if frames else "",
                        plan.rebind_s,
                    )
                    told_in_use = True
                await trio.sleep(capped_backoff(attempt, base_s=0.25, cap_s=plan.rebind_s))
                attempt += 1


def _innermost(exc: BaseException) -> BaseException:
    """The one error inside nested single-member exception groups (trio's nurseries)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    error = _innermost(exc)
    if isinstance(error, EngineError):
        return error.message  # already says what to do, with secrets masked
    return f"{type(error).__name__}: {str(error)[:200]}"
