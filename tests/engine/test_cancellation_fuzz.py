"""Seeded cancellation fuzz: requests cancelled at random points always end cleanly.

Every request, whatever happens to it, ends with exactly one ending as its
last event, and afterwards nothing of it is left: no open request, no
credit, no slot, nothing in any shared buffer. Seeds make a failure
reproducible (``-k "seed-7"``).
"""

from __future__ import annotations

import random

import pytest
import trio

from orpipe.engine import Cancelled, Completed, Ending, Failed, Incomplete, OutboundEvent
from tests.engine.support import mock_server, request, running_engine, wait_until

ENDINGS = (Completed, Incomplete, Failed, Cancelled)
SCENARIOS = ["text", "reasoning", "annotations", "tools", "drop", "stall", "malformed", "http-503"]
MODES = ["read all", "close early", "cancel early", "cancel at once"]
REQUESTS = 80


@pytest.mark.parametrize(
    ("seed", "express"),
    [
        pytest.param(seed, express, id=f"seed-{seed}-{'express' if express else 'shared'}")
        for seed, express in [(1, True), (7, True), (42, True), (7, False)]
    ],
)
async def test_random_cancellations_always_end_each_request_once(seed: int, express: bool) -> None:
    outcomes: dict[int, tuple[str, list[OutboundEvent], Ending | None]] = {}
    async with (
        mock_server() as server,
        running_engine(
            server,
            max_concurrent_requests=16,
            queue_maxsize=REQUESTS,
            read_idle_timeout_s=0.5,
            retry_attempts=1,
            retry_backoff_initial_s=0.01,
            retry_backoff_max_s=0.02,
            request_window_events=8,
            express_lane=express,
        ) as engine,
    ):

        async def one(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            mode = rng.choice(MODES)
            req = request(
                rng.choice(SCENARIOS),
                tokens=rng.randint(1, 60),
                tps=rng.choice([0, 0, 800]),
                drop_after=rng.randint(0, 10),
                stall_after=rng.randint(0, 10),
                retry_after=0,
            )
            stop_at = rng.randint(0, 25)
            stream = engine.submit(req)
            if mode == "cancel at once":
                engine.cancel(stream.request_id, "fuzz: at once")
            events: list[OutboundEvent] = []
            async for event in stream:
                events.append(event)
                if len(events) == stop_at and mode == "close early":
                    await stream.aclose()
                    break
                if len(events) == stop_at and mode == "cancel early":
                    engine.cancel(stream.request_id, "fuzz: early")
            outcomes[index] = (mode, events, stream.ending)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for index in range(REQUESTS):
                    nursery.start_soon(one, index)
        # The server notices closed connections on its own schedule.
        await wait_until(lambda: server.stats.streams_active == 0)
        stats = engine.statistics()

    assert len(outcomes) == REQUESTS
    for index, (mode, events, ending) in outcomes.items():
        assert ending is not None, (index, mode)
        seen = [e for e in events if isinstance(e, ENDINGS)]
        if mode == "close early" and not seen:
            assert isinstance(ending, Cancelled)  # recorded by aclose()
            continue
        assert len(seen) == 1, (index, mode, seen)
        assert events[-1] is seen[0] is ending, (index, mode)
    assert stats.flow.open_requests == 0
    assert stats.flow.credits_in_flight == 0
    assert stats.admission.in_flight == 0
    assert stats.admission.waiting == 0
    assert sum(stats.endings.values()) == REQUESTS
    for name in ("admission.out", "fetch.out", "parse.out", "reorder.out", "batch.out"):
        assert stats.channels[name].current_buffer_used == 0, name
    # The shared stages hold no per-request state any more.
    assert stats.actors["reorderer"]["now_held_events"] == 0
    for actor in ("reorderer", "batcher", "emitter"):
        assert stats.actors[actor]["now_open_requests"] == 0, actor
    assert stats.actors["batcher"]["now_pending_runs"] == 0
