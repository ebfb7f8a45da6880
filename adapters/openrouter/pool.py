"""Connection pools split into shards, because one large httpx pool is slow.

httpcore's pool reassigns queued requests to connections by scanning every
connection on each request start and end, so its cost grows with the square
of the pool size (encode/httpcore#1035). At 200 concurrent streams one pool
spent 15 to 18% of the client's CPU there and delayed response headers by
seconds in our bench. Several small clients, picked round-robin, keep every
scan short. The bench's baseline client uses the same layout, so the
engine/baseline comparison stays like for like.

trio-flavoured (httpx picks its trio backend under trio).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import httpx

from orpipe.engine.async_resource import AsyncResource

__all__ = ["CONNECTIONS_PER_CLIENT", "ShardedClients"]

#: Connections per httpx client; small enough for cheap pool scans.
CONNECTIONS_PER_CLIENT = 32


class ShardedClients(AsyncResource):
    """``ceil(connections / CONNECTIONS_PER_CLIENT)`` clients, handed out in turn."""

    def __init__(self, connections: int, **client_options: Any) -> None:
        shards = max(1, math.ceil(connections / CONNECTIONS_PER_CLIENT))
        per_client = math.ceil(connections / shards)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        self.clients = [httpx.AsyncClient(limits=limits, **client_options) for _ in range(shards)]
        self._turn: Iterator[httpx.AsyncClient] = itertools.cycle(self.clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turn)

    async def open(self) -> None:
        for client in self.clients:
            await client.__aenter__()

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
