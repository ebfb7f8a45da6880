"""Live telemetry for a headless engine: the sampler and the server beside it.

``open_telemetry(engine)`` starts ``actors.telemetry.telemetry_sampler`` and
``adapters.telemetry.server.serve_telemetry`` in a nursery next to a running
engine and yields a ``TelemetryRun`` (the hub, and where the WebSocket,
``/metrics`` and the dashboard listen). Leaving the block cancels both; the
engine itself belongs to the caller. Tests use this; so does the command::

    python -m bench telemetry [--port 8765] [--ws-port 0] [--interval 0.5]
                              [--rate 6] [--duration 0] [--screenshot PATH]

(or ``python -m bench.telemetry_run``), which runs the mock OpenRouter, an
engine against it with small limits, a bursty demo load (so the queues,
in-flight and rejection charts move), and the telemetry, printing the
dashboard's URL. Ctrl-C stops it. With ``--screenshot PATH`` (and a
``--duration``) it saves a picture of the dashboard taken by headless
Chromium before it stops, e.g. under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from orpipe.actors.telemetry import TelemetryHub, telemetry_sampler
from orpipe.actors.telemetry_core import BreakerSources, TelemetrySettings
from orpipe.adapters.telemetry.server import (
    TelemetryEndpoints,
    TelemetryServerSettings,
    serve_telemetry,
)
from orpipe.bench.engine_client import open_mock_engine
from orpipe.bench.headless_chromium import ChromiumMissing, open_chromium
from orpipe.bench.mock_openrouter import MockServer, serve_mock
from orpipe.engine import (
    AdmissionRejected,
    ChatRequest,
    Engine,
    EngineConfig,
    ResponseStream,
)

__all__ = ["DASHBOARD_DIR", "TelemetryRun", "main", "open_telemetry"]

#: The static dashboard (index.html, dashboard.js, dashboard.css).
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
#: The mock takes any key; the transport still sends one.


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryRun:
    """What ``open_telemetry`` yields: the hub and the bound endpoints."""

    hub: TelemetryHub
    endpoints: TelemetryEndpoints


@asynccontextmanager
async def open_telemetry(
    engine: Engine,
    settings: TelemetrySettings | None = None,
    server: TelemetryServerSettings | None = None,
    *,
    breakers: BreakerSources | None = None,
) -> AsyncIterator[TelemetryRun]:
    """Sample ``engine`` and serve the frames for the duration of the block.

    The sampler has published its first frame and both listeners are bound
    when this yields. The dashboard is served from ``DASHBOARD_DIR`` unless
    ``server`` names another directory.
    """
    hub = TelemetryHub(engine.statistics, settings, breakers=breakers)
    server = server or TelemetryServerSettings(dashboard_dir=DASHBOARD_DIR)
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry_sampler, hub)
        endpoints: TelemetryEndpoints = await nursery.start(
            functools.partial(serve_telemetry, hub, server)
        )
        yield TelemetryRun(hub=hub, endpoints=endpoints)
        nursery.cancel_scope.cancel()


# -- the demo command -------------------------------------------------------------------


async def _consume(stream: ResponseStream, *, slow_s: float) -> None:
    """Read one answer; a slow reader pauses between batches (a slow browser)."""
    async with stream:
        while await stream.receive_batch():
            if slow_s:
                await trio.sleep(slow_s)


async def _demo_load(engine: Engine, rate: float, rng: random.Random) -> None:
    """Open-loop arrivals (Poisson, mean ``rate``/s) with a burst every 20 s.

    No task per rejected request; admitted ones are bounded by the engine's
    limits (``max_concurrent_requests + queue_maxsize``), so this cannot pile up.
    """
    async with trio.open_nursery() as nursery:
        next_burst = trio.current_time() + 5.0
        while True:
            await trio.sleep(rng.expovariate(rate))
            arrivals = 1
            if trio.current_time() >= next_burst:
                arrivals, next_burst = 40, next_burst + 20.0  # overflows the waiting room
            for _ in range(arrivals):
                request = ChatRequest(
                    model="mock/text",
                    input=({"role": "user", "content": "telemetry demo"},),
                    options={
                        "metadata": {
                            "mock.tokens": str(rng.randint(50, 400)),
                            "mock.tps": "80",
                            "mock.seed": str(rng.randint(0, 1_000_000)),
                        }
                    },
                )
                try:
                    stream = engine.submit(request)
                except AdmissionRejected:
                    continue
                slow_s = 0.05 if rng.random() < 0.2 else 0.0
                nursery.start_soon(functools.partial(_consume, stream, slow_s=slow_s))


async def _screenshot(url: str, path: Path, hub: TelemetryHub) -> None:
    """Open the dashboard in headless Chromium and save it once it has caught up.

    Caught up: it has drawn the frame that was newest when it was opened, so the
    picture shows the whole history, not the first few frames of its replay.
    """
    newest = hub.counters.frames_total
    profile = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, "", "orpipe-chromium-"))
    try:
        async with open_chromium(url, profile) as page:
            with trio.move_on_after(60) as waited:
                # Polling: the page is in another process; there is no event to wait on.
                probe = f"Number(document.body.dataset.seq) >= {newest}"
                while not await page.evaluate(probe):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            if waited.cancelled_caught:
                print("the dashboard drew nothing within 60 s: no screenshot", file=sys.stderr)
                return
            await page.screenshot(path)
        print(f"screenshot: {path}", flush=True)
    except ChromiumMissing as exc:
        print(f"{exc} No screenshot.", file=sys.stderr)
    finally:
        await trio.to_thread.run_sync(functools.partial(shutil.rmtree, profile, True))


async def _run(args: argparse.Namespace) -> None:
    settings = TelemetrySettings(interval_s=args.interval)
    server = TelemetryServerSettings(
        host=args.host, http_port=args.port, ws_port=args.ws_port, dashboard_dir=DASHBOARD_DIR
    )
    async with trio.open_nursery() as nursery:
        mock: MockServer = await nursery.start(serve_mock)
        config = EngineConfig(
            base_url=mock.base_url,
            max_concurrent_requests=args.max_concurrent,
            queue_maxsize=args.queue_maxsize,
        )
        async with (
            open_mock_engine(config) as engine,
            open_telemetry(engine, settings, server) as run,
        ):
            print(f"dashboard:  {run.endpoints.http_url}/", flush=True)
            print(f"websocket:  {run.endpoints.ws_url}", flush=True)
            print(f"prometheus: {run.endpoints.metrics_url}", flush=True)
            with trio.move_on_after(args.duration or math.inf):
                async with trio.open_nursery() as load:
                    load.start_soon(_demo_load, engine, args.rate, random.Random(args.seed))
                    if args.screenshot is not None and args.duration:
                        await trio.sleep(max(0.0, args.duration - 8.0))
                        await _screenshot(run.endpoints.dashboard_url, args.screenshot, run.hub)
                        load.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bench.telemetry_run") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the engine against the mock OpenRouter with live telemetry.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port (0: any free one)")
    parser.add_argument("--ws-port", type=int, default=0, help="WebSocket port (0: any)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between frames")
    parser.add_argument("--rate", type=float, default=6.0, help="mean arrivals per second")
    parser.add_argument("--max-concurrent", type=int, default=20)
    parser.add_argument("--queue-maxsize", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=0.0, help="seconds; 0 runs until ^C")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG path (needs chromium)")
    trio.run(_run_until_signal, parser.parse_args(argv))
    return 0


async def _run_until_signal(args: argparse.Namespace) -> None:
    """Ctrl-C or SIGTERM cancel the run cleanly.

    The signals are received rather than left to trio's ``KeyboardInterrupt``,
    which can land in any task — inside the mock's server, which would log and
    swallow it — instead of stopping the run.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    print("stopping", file=sys.stderr, flush=True)
                    nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_signal)
            await _run(args)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
