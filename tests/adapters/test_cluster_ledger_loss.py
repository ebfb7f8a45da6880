"""The admission ledger keeps the global limit when Redis loses its state or goes away.

Against a real redis-server each test starts: restarted empty (no persistence)
or flushed while ledger instances (standing for workers) hold the whole limit,
a ledger cut off while the others go on, and the local share during an outage.
The hold after a loss lasts one lease: tests that must see it still running use
the longest lease (10 s) so a slow machine cannot outlast it; conditions are
polled with generous bounds, never asserted on timings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import trio

from orpipe.adapters.cluster.redis_ledger import MAX_LEASE_S, RedisAdmissionLedger
from orpipe.engine.errors import PersistenceError
from tests.adapters.cluster_support import KEYS, in_redis, ledger_on, wait_for

if TYPE_CHECKING:
    from tests.redis_support import RedisServer

pytest_plugins = ["tests.redis_support"]


def restart_empty(server: RedisServer) -> None:
    server.kill()
    server.restart()  # the test server runs without persistence: it comes back empty


def flush_all(server: RedisServer) -> None:
    with server.client() as client:
        client.flushall()


LOSSES = pytest.mark.parametrize("lose", [restart_empty, flush_all], ids=["restart", "flushall"])


def permits_in_redis(server: RedisServer, limit: int) -> list[str]:
    """The permits in Redis, checked against the limit on every look."""
    permits = in_redis(server, KEYS.permits)
    assert len(permits) <= limit, f"over the global limit: {permits}"
    return permits


@LOSSES
async def test_after_a_loss_nobody_new_is_admitted_until_every_holder_registered_again(
    redis_server: RedisServer,
    lose: Callable[[RedisServer], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="orpipe.cluster")
    async with (
        ledger_on(redis_server, limit=2, lease_s=MAX_LEASE_S) as one,
        ledger_on(redis_server, limit=2, lease_s=MAX_LEASE_S) as two,
        trio.open_nursery() as nursery,
    ):
        assert (await one.arrive("a")).admitted
        assert (await two.arrive("b")).admitted
        assert not (await one.arrive("queued")).admitted  # the limit is full
        await trio.to_thread.run_sync(lose, redis_server)
        assert permits_in_redis(redis_server, 2) == []

        # Both permits are gone from Redis, yet both requests still stream: a new
        # arrival waits in line (it is not refused) instead of taking one.
        late = await two.arrive("late")
        assert not late.admitted and late.retry_after_s is None
        assert not await one.retry("queued")  # its place is taken again, at the end
        assert permits_in_redis(redis_server, 2) == []

        # One worker's heartbeat takes its permit back: a permit looks free, but the
        # other worker has not registered yet, so still nobody new goes.
        nursery.start_soon(one.run)
        await wait_for(lambda: permits_in_redis(redis_server, 2), "the first worker registered")
        assert not await one.retry("queued")
        assert not await two.retry("late")
        assert permits_in_redis(redis_server, 2) == [f"{one.worker_id}/a"]

        nursery.start_soon(two.run)
        await wait_for(lambda: len(permits_in_redis(redis_server, 2)) == 2, "both registered")
        assert not await one.retry("queued")
        assert not await two.retry("late")
        assert set(permits_in_redis(redis_server, 2)) == {
            f"{one.worker_id}/a",
            f"{two.worker_id}/b",
        }
        assert (one.statistics().admitted_total, two.statistics().admitted_total) == (1, 1)
        assert (one.statistics().state_losses_total, two.statistics().state_losses_total) == (
            1,
            1,
        )
        told = [r.getMessage() for r in caplog.records if "lost the admission" in r.getMessage()]
        assert told, "the administrator is told that Redis lost the ledger's state"
        assert all(redis_server.url not in message for message in told)
        nursery.cancel_scope.cancel()


@LOSSES
async def test_the_arrivals_held_back_after_a_loss_are_admitted_when_the_hold_ends(
    redis_server: RedisServer, lose: Callable[[RedisServer], None]
) -> None:
    async with ledger_on(redis_server, limit=2, lease_s=0.5) as ledger:
        assert (await ledger.arrive("before")).admitted
        await ledger.leave("before")
        await trio.to_thread.run_sync(lose, redis_server)
        assert not (await ledger.arrive("after")).admitted
        admitted = False
        with trio.move_on_after(15):
            while not (admitted := await ledger.retry("after")):  # noqa: ASYNC110 - Redis' clock
                await trio.sleep(0.05)
        assert admitted, "the hold ends within a lease"
        assert permits_in_redis(redis_server, 2) == [f"{ledger.worker_id}/after"]


async def test_a_first_start_on_an_empty_redis_admits_at_once(redis_server: RedisServer) -> None:
    # Nobody saw a ledger before: an empty Redis is a first start, not a loss.
    async with ledger_on(redis_server, limit=1, lease_s=MAX_LEASE_S) as one:
        assert (await one.arrive("a")).admitted
        assert one.statistics().state_losses_total == 0


# -- Redis out of reach ----------------------------------------------------------------------


async def test_in_fallback_what_a_worker_holds_counts_against_its_share(
    redis_server: RedisServer,
) -> None:
    async with ledger_on(redis_server, limit=4, queue=4, workers=2) as ledger:
        for request in ("a", "b", "c"):
            assert (await ledger.arrive(request)).admitted
        await trio.to_thread.run_sync(redis_server.kill)

        # Three held, over its share of two: nothing new until under the share.
        new = await ledger.arrive("new")
        assert not new.admitted and new.retry_after_s is None
        stats = ledger.statistics()
        assert (stats.mode, stats.local_share, stats.permits_held) == ("local_share", 2, 3)
        await ledger.leave("a")
        assert not await ledger.retry("new"), "two held: still not under the share of two"
        await ledger.leave("b")
        assert await ledger.retry("new")
        assert ledger.statistics().permits_held == 2


async def test_in_fallback_the_workers_caps_add_up_to_the_limit(
    redis_server: RedisServer,
) -> None:
    async with (
        ledger_on(redis_server, limit=4, queue=4, workers=2) as busy,
        ledger_on(redis_server, limit=4, queue=4, workers=2) as idle,
    ):
        for request in ("a", "b", "c"):
            assert (await busy.arrive(request)).admitted
        assert (await idle.arrive("d")).admitted  # its answer: 4 of 4 in use
        await trio.to_thread.run_sync(redis_server.kill)

        # ``idle`` is within its share of two, but the limit was full when it last
        # heard from Redis: taking a second would make five.
        assert not (await idle.arrive("x")).admitted
        assert idle.statistics().local_share == 1
        assert not (await busy.arrive("y")).admitted
        await busy.leave("a")
        await busy.leave("b")
        assert await busy.retry("y"), "under its share of two"
        assert busy.statistics().permits_held + idle.statistics().permits_held == 3


def cut_off(ledger: RedisAdmissionLedger, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make every Redis call of ``ledger`` fail, as a partition would; returns the undo."""
    link = ledger._link  # (the one door to Redis)

    async def call(work: Callable[[], Any], doing: str) -> Any:
        raise PersistenceError(f"Redis did not answer while {doing} (cut off by the test).")

    monkeypatch.setattr(link, "call", call)
    return monkeypatch.undo


async def test_a_worker_whose_leases_expired_while_cut_off_holds_admissions_on_return(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        ledger_on(redis_server, limit=1, lease_s=0.5) as cut,
        ledger_on(redis_server, limit=1, lease_s=MAX_LEASE_S) as other,
        trio.open_nursery() as nursery,
    ):
        assert (await cut.arrive("a")).admitted
        reconnect = cut_off(cut, monkeypatch)
        assert not (await cut.arrive("b")).admitted  # it holds its whole local share
        assert cut.statistics().mode == "local_share"
        # Its lease expires in Redis; the other worker takes the permit.
        assert not (await other.arrive("x")).admitted
        admitted = False
        with trio.move_on_after(15):
            while not (admitted := await other.retry("x")):  # noqa: ASYNC110 - Redis' clock
                await trio.sleep(0.05)
        assert admitted, "the cut-off worker's lease expired"
        assert hold_started(redis_server) is None  # nothing was lost in Redis

        reconnect()
        nursery.start_soon(cut.run)
        await wait_for(lambda: cut.statistics().mode == "global", "the worker is back")
        # Nothing admitted is dropped (the documented bound: its share over the limit),
        # and its return holds new admissions until every worker registered again.
        assert len(in_redis(redis_server, KEYS.permits)) == 2
        assert hold_started(redis_server) is not None
        nursery.cancel_scope.cancel()


def hold_started(server: RedisServer) -> bytes | None:
    with server.client() as client:
        hold: bytes | None = client.hget(KEYS.state, "hold")
        return hold
