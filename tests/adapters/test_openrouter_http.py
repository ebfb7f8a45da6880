"""The httpx transport over real loopback: headers, key, shards, unreachable hosts."""

from __future__ import annotations

import socket

import trio

from orpipe.adapters import OpenRouterHttpTransport
from orpipe.adapters.bridge import GuestModeBridge, ThreadBridge
from orpipe.adapters.openrouter.pool import CONNECTIONS_PER_CLIENT, ShardedClients
from orpipe.engine import (
    Completed,
    EngineConfig,
    Failed,
    UpstreamConnectError,
    UpstreamHTTPError,
)
from tests.engine.support import API_KEY, collect, mock_server, request, running_engine


async def test_connections_are_spread_over_small_clients() -> None:
    async with ShardedClients(208, base_url="http://127.0.0.1:9/") as shards:
        assert len(shards.clients) == -(-208 // CONNECTIONS_PER_CLIENT)
        handed = [shards.next() for _ in range(2 * len(shards.clients))]
    assert handed[: len(shards.clients)] == shards.clients  # round-robin, every one used
    assert handed[len(shards.clients) :] == shards.clients


async def test_the_key_is_sent_as_a_bearer_token() -> None:
    async with mock_server(api_key=API_KEY) as server, running_engine(server) as engine:
        got = await collect(engine.submit(request("text", tokens=5)))
    assert isinstance(got.ending, Completed)


async def test_a_wrong_key_reads_as_advice() -> None:
    async with (
        mock_server(api_key="sk-or-v1-the-right-one") as server,
        running_engine(server) as engine,
    ):
        got = await collect(engine.submit(request("text", tokens=5)))
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamHTTPError)
    assert got.ending.error.status == 401
    assert "check the key in the settings" in got.ending.message


async def test_an_unreachable_openrouter_is_retried_then_reported() -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}/api/v1"

    class Server:  # running_engine only needs base_url
        base_url = base

    async with running_engine(
        Server(),  # type: ignore[arg-type]
        retry_attempts=2,
        retry_backoff_initial_s=0.01,
        retry_backoff_max_s=0.02,
    ) as engine:
        with trio.fail_after(10):
            got = await collect(engine.submit(request("text")))
        retries = engine.statistics().actors["fetcher"]["retries"]
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamConnectError)
    assert "could not be reached" in got.ending.message
    assert retries == 2


def test_the_key_is_not_in_the_repr() -> None:
    transport = OpenRouterHttpTransport(EngineConfig(), api_key=API_KEY)
    assert API_KEY not in repr(transport)
    assert "openrouter.ai" in repr(transport)


def test_the_key_is_not_in_the_bridges_reprs() -> None:
    for kind in (GuestModeBridge, ThreadBridge):
        bridge = kind(EngineConfig(), api_key=API_KEY)
        assert API_KEY not in repr(vars(bridge))
