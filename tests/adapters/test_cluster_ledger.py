"""RedisAdmissionLedger against a real redis-server each test starts (and kills).

Two ledger instances on one Redis stand for two workers; the lease-expiry tests
run real processes, ledgers alone (``tests.adapters.ledger_worker``) and engines
as the Function runs them against the mock (``tests.adapters.ledger_engine_worker``),
and kill one with SIGKILL. Leases are short (about a second) so expiry is quick; conditions are
polled with generous bounds (``wait_for``), never asserted on timings.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
import trio

from orpipe.adapters.cluster.ledger_scripts import LedgerKeys
from orpipe.adapters.cluster.redis_ledger import RedisAdmissionLedger
from orpipe.adapters.store.redis_link import RedisLink
from orpipe.engine.errors import UsageError
from orpipe.engine.ports import AdmissionLedger
from tests.engine.support import mock_server

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]

PREFIX = "orpipe:admission:test"
KEYS = LedgerKeys(PREFIX)
ROOT = Path(__file__).resolve().parents[2]
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


# -- the scripts ---------------------------------------------------------------------------


async def test_it_is_an_admission_ledger_and_refuses_a_lease_over_ten_seconds(
    redis_server: RedisServer,
) -> None:
    async with ledger_on(redis_server) as ledger:
        port: AdmissionLedger = ledger
        assert port.statistics().mode == "global"
    with pytest.raises(UsageError, match="lease_s"):
        async with ledger_on(redis_server, lease_s=11):
            pass


async def test_a_free_permit_is_taken_at_once_and_leaving_frees_it_idempotently(
    redis_server: RedisServer,
) -> None:
    async with ledger_on(redis_server, limit=2) as ledger:
        assert (await ledger.arrive("a")).admitted
        assert (await ledger.arrive("b")).admitted
        stats = ledger.statistics()
        assert (stats.permits_held, stats.global_in_use, stats.admitted_total) == (2, 2, 2)
        assert in_redis(redis_server, KEYS.permits) == sorted(
            [f"{ledger.worker_id}/a", f"{ledger.worker_id}/b"]
        )
        await ledger.leave("a")
        await ledger.leave("a")
        await ledger.leave("never-seen")
        assert in_redis(redis_server, KEYS.permits) == [f"{ledger.worker_id}/b"]
        assert (await ledger.arrive("c")).admitted
        assert ledger.statistics().permits_held == 2


async def test_waiters_are_served_in_arrival_order_across_workers(
    redis_server: RedisServer,
) -> None:
    async with ledger_on(redis_server, limit=1) as one, ledger_on(redis_server, limit=1) as two:
        assert (await one.arrive("first")).admitted
        assert (await two.arrive("second")) == (await two.arrive("second"))  # idempotent
        assert not (await two.arrive("second")).admitted
        third = await one.arrive("third")
        assert not third.admitted and third.retry_after_s is None
        # Nobody may jump the line, even when a permit is free.
        assert not (await one.arrive("fourth")).admitted
        assert not await one.retry("third")
        await one.leave("first")
        assert not await one.retry("third"), "'second' arrived earlier, on the other worker"
        assert await two.retry("second")
        await two.leave("second")
        assert await one.retry("third")
        assert one.statistics().places_held == 1  # 'fourth'
        assert not await one.retry("never arrived")
        assert in_redis(redis_server, KEYS.line) == [f"{one.worker_id}/fourth"]


async def test_a_full_line_refuses_at_once_with_the_retry_hint(redis_server: RedisServer) -> None:
    async with ledger_on(redis_server, limit=1, queue=1) as ledger:
        assert (await ledger.arrive("a")).admitted
        assert not (await ledger.arrive("b")).admitted
        refused = await ledger.arrive("c")
        assert not refused.admitted and refused.retry_after_s == 7.0
        stats = ledger.statistics()
        assert (stats.rejected_total, stats.places_held, stats.global_waiting) == (1, 1, 1)
        await ledger.leave("b")  # a waiter that leaves gives its place back
        assert in_redis(redis_server, KEYS.line) == []
        assert not (await ledger.arrive("c")).admitted


async def test_the_places_and_permits_of_a_worker_that_stops_renewing_expire(
    redis_server: RedisServer,
) -> None:
    async with (
        ledger_on(redis_server, limit=1, lease_s=0.5) as dead,
        ledger_on(redis_server, limit=1, lease_s=0.5) as live,
    ):
        assert (await dead.arrive("held")).admitted
        assert not (await dead.arrive("waiting")).admitted
        assert not (await live.arrive("mine")).admitted
        # ``dead`` never runs its heartbeat: both its entries expire within a lease,
        # and the next script purges them (ask until the expiry has passed).
        admitted = False
        with trio.move_on_after(BOUND_S):
            while not (admitted := await live.retry("mine")):  # noqa: ASYNC110 - expiry in Redis
                await trio.sleep(0.05)
        assert admitted
        assert in_redis(redis_server, KEYS.line) == []
        assert in_redis(redis_server, KEYS.permits) == [f"{live.worker_id}/mine"]


async def test_the_heartbeat_keeps_leases_alive_and_registers_the_worker(
    redis_server: RedisServer,
) -> None:
    async with ledger_on(redis_server, limit=1, lease_s=0.3) as ledger, trio.open_nursery() as n:
        n.start_soon(ledger.run)
        assert (await ledger.arrive("kept")).admitted
        await wait_for(lambda: ledger.statistics().live_workers == 1, "the worker registered")
        await trio.sleep(1.0)  # over three leases: only renewal keeps it
        assert in_redis(redis_server, KEYS.permits) == [f"{ledger.worker_id}/kept"]
        n.cancel_scope.cancel()


async def test_a_release_on_another_worker_wakes_a_waiter(redis_server: RedisServer) -> None:
    async with (
        ledger_on(redis_server, limit=1, poll_s=3600) as waiter,
        ledger_on(redis_server, limit=1) as holder,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(waiter.run)
        assert (await holder.arrive("a")).admitted
        woken = trio.Event()

        async def wait() -> None:
            await waiter.wait_for_change(3600)
            woken.set()

        nursery.start_soon(wait)
        # Releases until the subscriber is listening (subscribing takes a moment).
        with trio.move_on_after(BOUND_S):
            while not woken.is_set():
                await holder.leave("a")
                assert (await holder.arrive("a")).admitted
                await trio.sleep(0.1)
        assert woken.is_set(), "the waiter was not woken by the other worker's release"
        nursery.cancel_scope.cancel()


def hold_calls(
    ledger: RedisAdmissionLedger, doing: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[trio.Event, trio.Event]:
    """The next call ``doing`` this waits before it goes to Redis: (reached, go on)."""
    reached, go_on = trio.Event(), trio.Event()
    link = ledger._link  # (the one door to Redis: held here to order the race)
    real = link.call

    async def call(work: Callable[[], Any], what: str) -> Any:
        if what == doing and not go_on.is_set():
            reached.set()
            await go_on.wait()
        return await real(work, what)

    monkeypatch.setattr(link, "call", call)
    return reached, go_on


@pytest.mark.parametrize("doing", ["admitting a request", "admitting a waiting request"])
async def test_a_request_that_leaves_during_its_round_trip_holds_nothing_after_it(
    redis_server: RedisServer, doing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with ledger_on(redis_server, limit=1) as ledger, trio.open_nursery() as nursery:
        waiter = doing == "admitting a waiting request"
        if waiter:
            assert (await ledger.arrive("holder")).admitted
            assert not (await ledger.arrive("x")).admitted
        reached, go_on = hold_calls(ledger, doing, monkeypatch)
        answers: list[object] = []

        async def ask() -> None:
            answers.append(await (ledger.retry("x") if waiter else ledger.arrive("x")))

        nursery.start_soon(ask)
        await reached.wait()
        await ledger.leave("x")  # its release reaches Redis before the call does
        go_on.set()
        await wait_for(lambda: answers, "the call returned")
        assert f"{ledger.worker_id}/x" not in in_redis(redis_server, KEYS.permits)
        assert in_redis(redis_server, KEYS.line) == []
        stats = ledger.statistics()
        assert (stats.permits_held, stats.places_held) == (int(waiter), 0)


# -- Redis out of reach ----------------------------------------------------------------------


async def test_without_redis_a_worker_admits_its_share_and_returns_to_global_limits(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orpipe.cluster")
    async with ledger_on(redis_server, limit=4, queue=4, workers=2) as ledger:
        assert (await ledger.arrive("before")).admitted
        await trio.to_thread.run_sync(redis_server.kill)

        assert (await ledger.arrive("during")).admitted  # 2 of 4: this worker's share
        stats = ledger.statistics()
        assert (stats.mode, stats.local_share, stats.fallbacks_total) == ("local_share", 2, 1)
        assert stats.errors_total >= 1
        assert not (await ledger.arrive("waits")).admitted
        assert not (await ledger.arrive("waits too")).admitted
        refused = await ledger.arrive("refused")
        assert refused.retry_after_s == 7.0
        await ledger.leave("during")
        assert await ledger.retry("waits")
        told = [r for r in caplog.records if "admits up to 2 requests" in r.getMessage()]
        assert len(told) == 1, "the administrator is told once"
        assert redis_server.url not in told[0].getMessage()

        # Redis comes back empty (no persistence): the heartbeat registers again
        # everything this worker holds, and nothing admitted is dropped.
        await trio.to_thread.run_sync(redis_server.restart)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ledger.run)
            await wait_for(lambda: ledger.statistics().mode == "global", "back to global")
            nursery.cancel_scope.cancel()
        assert ledger.statistics().permits_held == 2
        members = {f"{ledger.worker_id}/{r}" for r in ("before", "waits")}
        assert set(in_redis(redis_server, KEYS.permits)) == members
        assert in_redis(redis_server, KEYS.line) == [f"{ledger.worker_id}/waits too"]
        assert ledger.statistics().fallbacks_total == 1
        assert any("answers again" in r.getMessage() for r in caplog.records)


# -- several processes -----------------------------------------------------------------------


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


async def test_without_a_worker_count_the_share_follows_the_live_workers_last_seen(
    redis_server: RedisServer,
) -> None:
    async with (
        ledger_on(redis_server, limit=6, queue=6) as one,
        ledger_on(redis_server, limit=6, queue=6) as two,
        ledger_on(redis_server, limit=6, queue=6) as alone,
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one.run)
            nursery.start_soon(two.run)
            await wait_for(lambda: one.statistics().live_workers == 2, "both workers registered")
            nursery.cancel_scope.cancel()
        await trio.to_thread.run_sync(redis_server.kill)
        for number in range(3):
            assert (await one.arrive(f"r{number}")).admitted
        assert not (await one.arrive("r3")).admitted  # 6 // 2 workers
        stats = one.statistics()
        assert (stats.mode, stats.local_share, stats.live_workers) == ("local_share", 3, 2)
        # A worker that never saw the others admits the whole limit alone.
        assert (await alone.arrive("a")).admitted
        assert alone.statistics().local_share == 6


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
