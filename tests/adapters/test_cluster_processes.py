"""The admission ledger across real processes, against a real redis-server.

Ledgers alone (``tests.adapters.ledger_worker``) and engines as the Function
runs them, against the mock OpenRouter (``tests.adapters.ledger_engine_worker``),
share one Redis; one process is killed with SIGKILL and its permits must come
back within about a lease (1 s here), with nobody ever beyond the global limit.
Conditions are polled with generous bounds, never asserted on timings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import trio

from orpipe.adapters.cluster.ledger_scripts import LedgerKeys
from tests.adapters.cluster_support import BOUND_S, KEYS, PREFIX, in_redis, wait_for
from tests.engine.support import mock_server

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A worker process (``module`` run with ``arguments``) and the admissions it printed."""

    def __init__(self, module: str, *arguments: object) -> None:
        self.admitted: list[str] = []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *map(str, arguments)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.admitted.append(line.split()[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)  # the pipe is at its end once the process is gone
        assert self.process.stdout is not None
        self.process.stdout.close()


def ledger_worker(server: RedisServer, worker_id: str, *, limit: int, wants: int) -> Worker:
    module = "tests.adapters.ledger_worker"
    return Worker(module, server.url, PREFIX, worker_id, limit, wants, 1.0)


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {BOUND_S} s: {what}"
        time.sleep(0.05)


def test_worker_processes_share_the_limit_and_a_killed_one_gives_its_permits_back(
    redis_server: RedisServer,
) -> None:
    limit = 4
    workers: list[Worker] = []
    try:
        first = ledger_worker(redis_server, "w1", limit=limit, wants=limit)
        workers.append(first)
        poll(lambda: len(first.admitted) == limit, "the first worker took every permit")
        # One after the other, so that their order in the line is known.
        workers.append(ledger_worker(redis_server, "w2", limit=limit, wants=3))
        poll(lambda: len(in_redis(redis_server, KEYS.line)) == 3, "w2 in line")
        workers.append(ledger_worker(redis_server, "w3", limit=limit, wants=3))
        poll(lambda: len(in_redis(redis_server, KEYS.line)) == 6, "w3 in line")

        def live_total() -> int:
            return sum(len(w.admitted) for w in workers if w.process.poll() is None)

        assert live_total() == limit, "nobody got a permit beyond the global limit"

        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=10)
        # Within about a lease (1 s), the dead worker's permits go to the others.
        poll(lambda: live_total() == limit, "the dead worker's permits came back")
        time.sleep(1.5)  # more than a lease: still nobody beyond the limit
        assert live_total() == limit
        assert len(in_redis(redis_server, KEYS.permits)) == limit
        # Arrival order: w2 arrived (all three) before w3.
        assert (len(workers[1].admitted), len(workers[2].admitted)) == (3, 1)
    finally:
        for worker in workers:
            worker.stop()


async def test_engine_processes_keep_the_upstream_within_the_global_limit_through_a_kill(
    redis_server: RedisServer,
) -> None:
    """Engines as the Function runs them, in three processes, against the mock: what
    reaches OpenRouter stays within the shared limit, and a killed engine's permits
    come back within about a lease."""
    limit, lease_s = 3, 1.0
    keys = LedgerKeys("orpipe:admission:engines")
    workers: list[Worker] = []

    def engine(requests: int) -> Worker:
        module = "tests.adapters.ledger_engine_worker"
        worker = Worker(module, redis_server.url, server.base_url, limit, requests, lease_s)
        workers.append(worker)
        return worker

    def streaming() -> int:
        return sum(len(w.admitted) for w in workers if w.process.poll() is None)

    async with mock_server() as server, trio.open_nursery() as nursery:
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.stats.streams_active)
                await trio.sleep(0.001)

        nursery.start_soon(sample)
        try:
            first = engine(limit)
            await wait_for(lambda: len(first.admitted) == limit, "the first engine streams")
            engine(2)
            await wait_for(lambda: len(in_redis(redis_server, keys.line)) == 2, "two waiting")
            engine(2)
            await wait_for(lambda: len(in_redis(redis_server, keys.line)) == 4, "four waiting")
            assert server.stats.streams_active == limit

            first.process.send_signal(signal.SIGKILL)
            await trio.to_thread.run_sync(first.process.wait)
            await wait_for(lambda: streaming() == limit, "the killed engine's permits back")
            await wait_for(lambda: server.stats.streams_active == limit, "the streams at the mock")
            await trio.sleep(2 * lease_s)  # well past a lease: still nobody beyond the limit
            assert streaming() == limit
            assert len(in_redis(redis_server, keys.permits)) == limit
        finally:
            for worker in workers:
                await trio.to_thread.run_sync(worker.stop)
            nursery.cancel_scope.cancel()
    assert peak == limit, "the mock never saw more streams than the global limit"
