"""Supervision (restarts, crashes as one EngineCrashed) and the shutdown cascade."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from orpipe.actors import open_engine
from orpipe.engine import (
    ChatRequest,
    Completed,
    EngineClosed,
    EngineConfig,
    EngineCrashed,
    EnginePorts,
    Failed,
    ServiceSpec,
)
from orpipe.engine.ports import UpstreamResponse
from tests.engine.support import collect, mock_server, request, running_engine, wait_until

CONFIG = EngineConfig(base_url="http://127.0.0.1:9/api/v1", restart_backoff_initial_s=1)


class StallingTransport:
    """Accepts every request and never answers (until cancelled)."""

    def __init__(self) -> None:
        self.opened = 0

    @asynccontextmanager
    async def stream(self, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.opened += 1
        await trio.sleep_forever()
        yield  # type: ignore[misc]  # unreachable: keeps this an async generator


class BuggyTransport:
    """A transport with a bug: raises something that is not an UpstreamError."""

    @asynccontextmanager
    async def stream(self, body: bytes) -> AsyncIterator[UpstreamResponse]:
        raise RuntimeError("bug in the transport")
        yield  # type: ignore[unreachable]


def chat() -> ChatRequest:
    return ChatRequest(model="m/x", input=({"role": "user", "content": "hi"},))


async def test_a_service_failing_on_external_faults_is_restarted_and_counted(
    autojump_clock: trio.abc.Clock,
) -> None:
    runs = 0
    recovered = trio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ConnectionResetError("redis went away")
        recovered.set()
        await trio.sleep_forever()

    spec = ServiceSpec(name="flusher", run=flaky, restart_on=(OSError,))
    async with open_engine(
        CONFIG, EnginePorts(transport=StallingTransport()), services=(spec,)
    ) as engine:
        started = trio.current_time()
        await recovered.wait()
        # Backoff 1 s, 2 s, 4 s between the three restarts (virtual time).
        assert trio.current_time() - started == pytest.approx(7, abs=0.01)
        assert engine.statistics().restarts == {"flusher": 3}


async def test_a_service_that_keeps_failing_stops_the_engine_with_one_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("database down")

    spec = ServiceSpec(name="catalog", run=broken, restart_on=(OSError,))
    config = EngineConfig(base_url=CONFIG.base_url, restart_max_attempts=2)
    with pytest.raises(EngineCrashed) as crashed:
        async with open_engine(
            config, EnginePorts(transport=StallingTransport()), services=(spec,)
        ):
            await trio.sleep_forever()
    assert "'catalog' failed 3 times" in crashed.value.message
    assert isinstance(crashed.value.__cause__, ConnectionRefusedError)


async def test_a_bug_in_a_service_unwinds_the_engine_and_ends_open_requests() -> None:
    async def buggy() -> None:
        await trio.sleep(0.05)
        raise ValueError("bug")

    transport = StallingTransport()
    spec = ServiceSpec(name="buggy", run=buggy, restart_on=(OSError,))
    with pytest.raises(EngineCrashed) as crashed:
        async with open_engine(
            CONFIG, EnginePorts(transport=transport), services=(spec,)
        ) as engine:
            stream = engine.submit(chat())
            await trio.sleep_forever()
    assert not isinstance(crashed.value, BaseExceptionGroup)
    assert isinstance(crashed.value.__cause__, ValueError)
    got = await collect(stream)
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, EngineClosed)


async def test_a_bug_in_an_actor_unwinds_the_engine_with_one_error() -> None:
    with pytest.raises(EngineCrashed) as crashed:
        async with open_engine(CONFIG, EnginePorts(transport=BuggyTransport())) as engine:
            stream = engine.submit(chat())
            await collect(stream)
            await trio.sleep_forever()
    assert isinstance(crashed.value.__cause__, RuntimeError)
    assert "internal error" in crashed.value.message


async def test_an_error_in_the_callers_block_passes_through_unchanged() -> None:
    with pytest.raises(KeyError):
        async with open_engine(CONFIG, EnginePorts(transport=StallingTransport())) as engine:
            engine.submit(chat())
            raise KeyError("the caller's own bug")


async def test_cancelling_around_the_engine_exits_cleanly() -> None:
    with trio.move_on_after(0.05) as scope:
        async with open_engine(CONFIG, EnginePorts(transport=StallingTransport())) as engine:
            stream = engine.submit(chat())
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert isinstance((await collect(stream)).ending, Failed)


async def test_graceful_shutdown_finishes_work_in_flight_and_refuses_new_work() -> None:
    async with mock_server() as server:
        async with running_engine(server, max_concurrent_requests=1, shutdown_grace_s=10) as engine:
            running = engine.submit(request("text", tokens=20, tps=200))
            waiting = engine.submit(request("text", tokens=5))
            await wait_until(lambda: server.stats.streams_active == 1)
            await engine.aclose()
            with pytest.raises(EngineClosed):
                engine.submit(request("text"))
        done, refused = await collect(running), await collect(waiting)
    assert isinstance(done.ending, Completed)
    assert isinstance(refused.ending, Failed)
    assert isinstance(refused.ending.error, EngineClosed)
    assert "before it started" in refused.ending.message


async def test_work_still_running_after_the_grace_is_cancelled_and_told() -> None:
    transport = StallingTransport()
    config = EngineConfig(base_url=CONFIG.base_url, shutdown_grace_s=0.05)
    async with open_engine(config, EnginePorts(transport=transport)) as engine:
        stream = engine.submit(chat())
        await wait_until(lambda: transport.opened == 1)
    got = await collect(stream)
    assert isinstance(got.ending, Failed)
    assert "stopped before this answer finished" in got.ending.message
