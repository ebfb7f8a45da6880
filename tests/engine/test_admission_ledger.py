"""Two engines share one admission ledger (``tests.shared_ledger``) against the mock OpenRouter."""

from __future__ import annotations

import trio

from orpipe.actors.admission_ledger import LEAVES_CHANNEL
from orpipe.engine import AdmissionRejected, Cancelled, Completed, EngineClosed, Failed
from orpipe.engine.statistics import LedgerStats
from tests.engine.support import collect, mock_server, request, running_engine, wait_until
from tests.shared_ledger import SharedLedger


async def test_two_engines_share_the_limit_the_line_and_give_every_permit_back() -> None:
    shared = SharedLedger(limit=2, maxsize=2, retry_after_s=4.0)
    async with (
        mock_server() as server,
        running_engine(server, admission_ledger=shared.port("a"), shutdown_grace_s=0.1) as a,
        running_engine(server, admission_ledger=shared.port("b"), shutdown_grace_s=0.1) as b,
        trio.open_nursery() as nursery,
    ):
        peaks = {"upstream": 0, "admitted": 0}

        async def sample() -> None:
            # A sampled check besides the ledger's own count: what reached the mock.
            while True:
                admitted = a.statistics().admission.in_flight + b.statistics().admission.in_flight
                peaks["admitted"] = max(peaks["admitted"], admitted)
                peaks["upstream"] = max(peaks["upstream"], server.stats.streams_active)
                await trio.sleep(0.001)

        nursery.start_soon(sample)
        a1 = a.submit(request("stall", stall_after=1))
        await wait_until(lambda: len(shared.permits) == 1)
        b1 = b.submit(request("stall", stall_after=1))
        await wait_until(lambda: server.stats.streams_active == 2)
        a2 = a.submit(request("text", tokens=3))
        await wait_until(lambda: len(shared.line) == 1)
        b2 = b.submit(request("text", tokens=3, seed=2))
        await wait_until(lambda: len(shared.line) == 2)

        # The shared line is full: refused at once, with the ledger's hint.
        refused = await collect(a.submit(request("text")))
        assert isinstance(refused.ending, Failed)
        assert isinstance(refused.ending.error, AdmissionRejected)
        assert refused.ending.error.retry_after_s == 4.0
        assert a.statistics().admission.rejected_total == 1

        stats = a.statistics()
        assert isinstance(stats.ledger, LedgerStats)
        assert (stats.ledger.permits_held, stats.ledger.places_held) == (1, 1)
        assert stats.channels[LEAVES_CHANNEL].max_buffer_size > 0
        assert server.stats.streams_active == 2

        # Cancelled mid-stream: b1's permit goes to the oldest waiter across engines (a2),
        # then a2's to b2.
        await b1.aclose()
        assert isinstance(b1.ending, Cancelled)
        assert isinstance((await collect(a2)).ending, Completed)
        assert isinstance((await collect(b2)).ending, Completed)
        assert shared.granted == [s.request_id for s in (a1, b1, a2, b2)]
        assert shared.peak_permits == 2
        await wait_until(lambda: list(shared.permits) == [a1.request_id])
        assert b.statistics().actors["admission"]["ledger_leaves_sent"] == 2

        # The engines stop with a request running (a1, a3) and one waiting (b3).
        a3 = a.submit(request("stall", stall_after=1))
        await wait_until(lambda: len(shared.permits) == 2)
        b3 = b.submit(request("stall", stall_after=1))
        await wait_until(lambda: list(shared.line) == [b3.request_id])
        nursery.cancel_scope.cancel()
    assert peaks == {"upstream": 2, "admitted": 2}
    for stream in (a1, a3, b3):
        assert isinstance((await collect(stream)).ending, Failed)
    assert isinstance(b3.ending, Failed) and isinstance(b3.ending.error, EngineClosed)
    # Every ending gave its permit or place back, engine shutdown included.
    assert shared.permits == {} and list(shared.line) == []


async def test_the_ledgers_upkeep_is_a_supervised_service() -> None:
    shared = SharedLedger(limit=1, maxsize=1)
    port = shared.port("a")
    port.fail_run = OSError("the shared state is out of reach")
    async with (
        mock_server() as server,
        running_engine(server, admission_ledger=port, restart_backoff_initial_s=0.01) as engine,
    ):
        await wait_until(lambda: port.runs == 2)
        assert engine.statistics().restarts == {"admission_ledger": 1}
        got = await collect(engine.submit(request("text", tokens=2)))
        assert isinstance(got.ending, Completed)
    assert shared.permits == {}


async def test_without_a_ledger_nothing_of_it_runs() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        got = await collect(engine.submit(request("text", tokens=2)))
        assert isinstance(got.ending, Completed)
        stats = engine.statistics()
        assert stats.ledger is None
        assert LEAVES_CHANNEL not in stats.channels
        assert "admission" not in stats.actors
        assert stats.restarts == {}
