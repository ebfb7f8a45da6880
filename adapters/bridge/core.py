"""The asyncio API both bridges share (``EngineBridge``); subclasses only say how trio runs.

``BridgeCore`` keeps what the next engine generation is opened from (config,
key or transport, store, shared admission ledger) and the current ``TrioRun``; every method is
asyncio-flavoured and crosses into trio once. ``GuestModeBridge``
(``guest.py``) and ``ThreadBridge`` (``thread.py``) implement ``_launch``.

Close: ``aclose()`` stops the trio run and waits until it has ended; answers
still open get their ending first (see ``trio_run.py``). A crashed engine is
reported to every later ``submit`` until someone calls ``start()`` again.
If the loop is closed without ``aclose()``, what is left depends on how trio
runs (see the subclasses); tests and short-lived scripts must call it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TypeVar, Unpack

from orpipe.adapters.bridge.generation import EngineSetup
from orpipe.adapters.bridge.protocol import (
    BRIDGE_CHANNEL,
    EngineBridge,
    EngineServices,
    TransportFactory,
)
from orpipe.adapters.bridge.stream import BridgedStream
from orpipe.adapters.bridge.trio_run import TrioRun
from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport
from orpipe.engine import (
    ChatRequest,
    EngineClosed,
    EngineConfig,
    EngineError,
    EngineStatistics,
    UpstreamTransport,
    UsageError,
)
from orpipe.engine.ports import ArtifactStore

__all__ = ["BridgeCore"]

T = TypeVar("T")


class BridgeCore(EngineBridge, abc.ABC):
    """``EngineBridge`` for both bridges; subclasses say how trio runs (``_launch``)."""

    def __init__(
        self,
        config: EngineConfig,
        api_key: str,
        *,
        window_batches: int = 8,
        **services: Unpack[EngineServices],
    ) -> None:
        if window_batches < 1:
            raise UsageError(f"window_batches must be at least 1, not {window_batches}")
        self.window_batches = window_batches
        self._setup = _setup(config, services, services.get("transport_factory") or api_key)
        self._run: TrioRun | None = None

    @property
    def config(self) -> EngineConfig:
        """The config new requests get (the last one given to ``reconfigure``)."""
        return self._setup.config

    @property
    def running(self) -> bool:
        return self._run is not None and not self._run.done.done()

    @property
    def open_streams(self) -> int:
        return len(self._run.open_streams) if self._run is not None else 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        run = self._run
        if run is not None and not run.done.done():
            if run.loop is not loop:
                raise UsageError(
                    "this bridge already runs on another event loop; use one bridge per loop"
                )
            await asyncio.shield(run.ready)
            return
        run = TrioRun(loop, self._setup, self.window_batches)
        self._run = run
        self._launch(run)
        await asyncio.shield(run.ready)

    async def submit(self, request: ChatRequest) -> BridgedStream:
        run = self._run
        if run is not None and run.done.done() and run.crash is not None:
            # Report the crash until someone decides to start() again.
            raise run.closed_error()
        await self.start()
        assert self._run is not None
        return await self._run.submit(request)

    async def statistics(self) -> EngineStatistics:
        run = self._started_run()

        def in_trio() -> EngineStatistics:
            engine = run.engine
            if engine is None:
                raise run.closed_error()
            return engine.statistics()

        stats = await run.call_in_trio(in_trio)
        # The asyncio side's per-request queues are a buffer like any other.
        channels = {**stats.channels, BRIDGE_CHANNEL: run.bridge_statistics()}
        actors = {
            **stats.actors,
            "bridge": {
                "handoffs_to_loop": run.handoffs_to_loop,
                "handoffs_to_trio": run.handoffs_to_trio,
            },
        }
        return dataclasses.replace(stats, channels=channels, actors=actors)

    async def reconfigure(
        self,
        config: EngineConfig,
        *,
        api_key: str | None = None,
        **services: Unpack[EngineServices],
    ) -> None:
        """A key and no transport: OpenRouter with that key; neither: the transport stays.
        A bridge that is not running opens its next run with the new setup."""
        transport = services.get("transport_factory") or (
            self._setup.transport_factory if api_key is None else api_key
        )
        setup = _setup(config, services, transport)
        self._setup = setup
        run = self._run
        if run is None or run.done.done():
            return
        await asyncio.shield(run.ready)
        await run.call_async_in_trio(lambda: run.start_generation(setup))

    async def wait_persisted(self, timeout_s: float) -> bool:
        run = self._started_run()

        async def in_trio() -> bool:
            generation = run.current
            if generation is None:
                raise run.closed_error()
            return await generation.engine.wait_persisted(timeout_s)

        return await run.call_async_in_trio(in_trio)

    async def call_store(self, fn: Callable[[ArtifactStore], Awaitable[T]]) -> T | None:
        await self.start()
        run = self._run
        assert run is not None

        async def in_trio() -> T | None:
            store = run.current.store if run.current is not None else None
            return None if store is None else await fn(store)

        return await run.call_async_in_trio(in_trio)

    async def call_store_when_persisted(
        self, fn: Callable[[ArtifactStore], Awaitable[T]], timeout_s: float
    ) -> tuple[T | None, bool]:
        await self.start()
        run = self._run
        assert run is not None

        async def in_trio() -> tuple[T | None, bool]:
            generation = run.current
            if generation is None:  # as call_store: nothing to read
                return None, False
            try:
                writes_failing = await generation.engine.wait_persisted(timeout_s)
            except EngineError:  # the barrier is a courtesy: read what is there
                writes_failing = False
            store = generation.store
            return (None if store is None else await fn(store)), writes_failing

        return await run.call_async_in_trio(in_trio)

    async def aclose(self) -> None:
        run = self._run
        if run is None:
            return
        if run.loop is not asyncio.get_running_loop():
            raise UsageError("aclose() must be awaited on the loop the bridge was started on")
        # If it never started, ``done`` is (or will be) set all the same.
        with contextlib.suppress(Exception):
            await asyncio.shield(run.ready)
        run.request_stop()
        await asyncio.shield(run.done)
        await self._after_done()

    def _started_run(self) -> TrioRun:
        """The run whose engine started; ``EngineClosed`` when there is none."""
        run = self._run
        if run is None or not run.ready.done() or run.ready.exception() is not None:
            raise EngineClosed("The engine is not running; submit a request to start it.")
        return run

    @abc.abstractmethod
    def _launch(self, run: TrioRun) -> None:
        """Start ``run.main`` in trio; ``run.finished`` must be called on the loop at its end."""

    @abc.abstractmethod
    async def _after_done(self) -> None:
        """What is left to do once the trio run has reported that it ended."""


def _setup(
    config: EngineConfig, services: EngineServices, transport: TransportFactory | str
) -> EngineSetup:
    """The next engine generation's setup; a key in place of the transport's factory
    means OpenRouter over HTTP with that key."""
    return EngineSetup(
        config,
        _http_transport(transport) if isinstance(transport, str) else transport,
        services.get("store_factory"),
        services.get("side_service"),
        services.get("ledger_factory"),
    )


def _http_transport(api_key: str) -> TransportFactory:
    """The real transport's factory. A closure, not ``functools.partial``: a
    partial's repr would print the key."""

    def open_transport(config: EngineConfig) -> AbstractAsyncContextManager[UpstreamTransport]:
        return OpenRouterHttpTransport(config, api_key=api_key)

    return open_transport
