"""RedisAdmissionLedger against a real redis-server each test starts (and kills).

Ledger instances on one Redis stand for workers (real processes:
``test_cluster_processes``). Leases are short (about a second) so expiry is
quick; conditions are polled with generous bounds (``wait_for``), never
asserted on timings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio

from orpipe.adapters.cluster.redis_ledger import RedisAdmissionLedger
from orpipe.engine.errors import UsageError
from orpipe.engine.ports import AdmissionLedger
from tests.adapters.cluster_support import BOUND_S, KEYS, in_redis, ledger_on, wait_for

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]


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
