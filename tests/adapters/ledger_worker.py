"""One "worker" process for the admission ledger tests: its own ledger on a shared Redis.

    python -m tests.adapters.ledger_worker URL PREFIX WORKER_ID LIMIT WANTS LEASE_S

It asks for WANTS permits (request ids ``r0``, ``r1``, ...), keeps the ones
it gets, waits in the shared line for the others, and prints one line
``admitted <request id>`` per permit as it gets it. It runs until killed.
"""

from __future__ import annotations

import sys

import trio

from orpipe.adapters.cluster.assembly import LedgerSettings, open_ledger
from orpipe.engine.config import EngineConfig


async def main(
    url: str, prefix: str, worker_id: str, limit: int, wants: int, lease_s: float
) -> None:
    settings = LedgerSettings(redis_url=url, prefix=prefix, lease_s=lease_s)
    config = EngineConfig(max_concurrent_requests=limit, queue_maxsize=100)
    async with open_ledger(settings, config) as ledger, trio.open_nursery() as nursery:
        ledger.worker_id = worker_id
        nursery.start_soon(ledger.run)
        waiting = []
        for i in range(wants):
            verdict = await ledger.arrive(f"r{i}")
            if verdict.admitted:
                print(f"admitted r{i}", flush=True)
            else:
                assert verdict.retry_after_s is None, "the line should not be full"
                waiting.append(f"r{i}")
        while waiting:
            await ledger.wait_for_change(1.0)
            for request_id in list(waiting):
                if await ledger.retry(request_id):
                    print(f"admitted {request_id}", flush=True)
                    waiting.remove(request_id)
        await trio.sleep_forever()


if __name__ == "__main__":
    url, prefix, worker_id, limit, wants, lease = sys.argv[1:]
    trio.run(main, url, prefix, worker_id, int(limit), int(wants), float(lease))
