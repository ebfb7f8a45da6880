"""One engine process for the admission ledger tests: the engine as the Function runs it.

    python -m tests.adapters.ledger_engine_worker REDIS_URL MOCK_URL LIMIT REQUESTS LEASE_S

An engine with the Redis admission ledger (``open_ledger``) and the HTTP
transport to the mock OpenRouter submits REQUESTS answers that stall after one
token, and prints ``streaming <request id>`` when an answer's first event
arrives (it was admitted and reached the mock). It runs until killed.
"""

from __future__ import annotations

import sys

import trio

from orpipe.actors import open_engine
from orpipe.adapters.cluster.assembly import LedgerSettings, open_ledger
from orpipe.adapters.openrouter.transport import OpenRouterHttpTransport
from orpipe.engine import EngineConfig, EnginePorts, ResponseStream
from tests.engine.support import API_KEY, request


async def main(redis_url: str, mock_url: str, limit: int, requests: int, lease_s: float) -> None:
    config = EngineConfig(base_url=mock_url, max_concurrent_requests=limit, queue_maxsize=50)
    prefix = "orpipe:admission:engines"
    settings = LedgerSettings(redis_url=redis_url, prefix=prefix, lease_s=lease_s)
    async with (
        OpenRouterHttpTransport(config, api_key=API_KEY) as transport,
        open_ledger(settings, config) as ledger,
        open_engine(config, EnginePorts(transport=transport, admission_ledger=ledger)) as engine,
        trio.open_nursery() as nursery,
    ):
        for _ in range(requests):
            nursery.start_soon(read, engine.submit(request("stall", stall_after=1)))


async def read(stream: ResponseStream) -> None:
    first = True
    async for _ in stream:
        if first:
            print(f"streaming {stream.request_id}", flush=True)
            first = False


if __name__ == "__main__":
    redis_url, mock_url, limit, requests, lease = sys.argv[1:]
    trio.run(main, redis_url, mock_url, int(limit), int(requests), float(lease))
