"""Helpers for the admission ledger tests on a real redis-server (``test_cluster_*``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import pytest
import trio

from orpipe.adapters.cluster.ledger_scripts import LedgerKeys
from orpipe.adapters.cluster.redis_ledger import RedisAdmissionLedger
from orpipe.adapters.store.redis_link import RedisLink

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

__all__ = ["BOUND_S", "KEYS", "PREFIX", "in_redis", "ledger_on", "wait_for"]

PREFIX = "orpipe:admission:test"
KEYS = LedgerKeys(PREFIX)
BOUND_S = 15.0  # generous: the machine is shared


@asynccontextmanager
async def ledger_on(
    server: RedisServer, *, limit: int = 2, queue: int = 4, lease_s: float = 1.0, **kw: object
) -> AsyncIterator[RedisAdmissionLedger]:
    link = RedisLink(server.url)
    try:
        yield RedisAdmissionLedger(
            link,
            prefix=PREFIX,
            limit=limit,
            queue_maxsize=queue,
            busy_retry_after_s=7.0,
            lease_s=lease_s,
            **kw,  # type: ignore[arg-type]
        )
    finally:
        link.close()


def in_redis(server: RedisServer, key: str) -> list[str]:
    with server.client() as client:
        return [m.decode() for m in client.zrange(key, 0, -1)]


async def wait_for(condition: Callable[[], object], what: str) -> None:
    with trio.move_on_after(BOUND_S):
        while not condition():  # noqa: ASYNC110 - the state is in Redis or another process
            await trio.sleep(0.05)
        return
    pytest.fail(f"not within {BOUND_S} s: {what}")
