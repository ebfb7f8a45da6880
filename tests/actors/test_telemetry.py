"""The telemetry sampler and hub: frames from real statistics, bounded fan-out, clean stop."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest
import trio
import trio.testing

from orpipe.actors.telemetry import TelemetryHub, telemetry_sampler
from orpipe.actors.telemetry_core import Frame, FrameRing, TelemetrySettings, build_frame
from orpipe.engine import AdmissionRejected, EngineClosed, TextDelta
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.channels import ChannelStats
from orpipe.engine.errors import ConfigError
from orpipe.engine.statistics import AdmissionStats, EngineStatistics, FlowStats, LedgerStats
from tests.engine.support import (
    MemoryStore,
    collect,
    mock_server,
    request,
    running_engine,
    wait_until,
)


def _stats(
    *,
    used: int = 3,
    rejected: int = 0,
    actors: dict | None = None,
    breakers: dict | None = None,
) -> EngineStatistics:
    return EngineStatistics(
        channels={
            "parse.out": ChannelStats(
                current_buffer_used=used,
                max_buffer_size=100,
                tasks_waiting_send=1,
                tasks_waiting_receive=0,
                peak_buffer_used=0,
                instances=1,
            )
        },
        admission=AdmissionStats(
            in_flight=2,
            waiting=1,
            max_concurrent=4,
            queue_maxsize=8,
            admitted_total=7,
            rejected_total=rejected,
            shed_total=0,
            withdrawn_total=0,
            queue_wait_max_s=0.25,
            queue_wait_total_s=1.5,
        ),
        flow=FlowStats(
            open_requests=3, credits_in_flight=10, credit_capacity=64, fetchers_waiting_credit=0
        ),
        actors=actors or {"parser": {"events": 12}},
        breakers=breakers or {},
        restarts={},
        endings={"completed": 5},
        logs={"requests": 0},
    )


class FakeEngine:
    """``statistics()`` that counts its calls; ``used`` follows a script."""

    def __init__(self) -> None:
        self.calls = 0

    def statistics(self) -> EngineStatistics:
        self.calls += 1
        return _stats(used=self.calls)


# -- the synchronous core -------------------------------------------------------------


def test_a_frame_carries_what_statistics_reported_and_nothing_else() -> None:
    persister = {"written": 4, "now_backlog": 2, "now_backlog_peak": 5, "now_degraded": 1}
    stats = _stats(actors={"persister": persister})
    frame = build_frame(
        stats,
        seq=3,
        t=1.5,
        unix_s=1_700_000_000.0,
        interval_s=0.5,
        breakers={"user": lambda: {"tracked": 2, "closed": 1, "open": 1, "half_open": 0}},
        telemetry={"frames_total": 2},
    )
    assert frame["seq"] == 3 and frame["t"] == 1.5 and frame["interval_s"] == 0.5
    assert frame["channels"] == {"parse.out": dataclasses.asdict(stats.channels["parse.out"])}
    assert frame["admission"] == dataclasses.asdict(stats.admission)
    assert frame["flow"] == dataclasses.asdict(stats.flow)
    assert frame["actors"] == {"persister": persister}
    assert frame["persister"] == {"backlog": 2, "backlog_peak": 5, "degraded": 1}
    assert frame["breakers"] == {"user": {"tracked": 2, "closed": 1, "open": 1, "half_open": 0}}
    assert frame["endings"] == {"completed": 5}
    assert frame["telemetry"] == {"frames_total": 2}
    # Plain data: survives JSON unchanged.
    assert msgspec.json.decode(msgspec.json.encode(frame)) == frame


def test_the_engines_breakers_and_handed_in_ones_share_one_section() -> None:
    tools = {"tracked": 1, "closed": 0, "open": 1, "half_open": 0}
    user = {"tracked": 0, "closed": 0, "open": 0, "half_open": 0}

    def frame_with(handed_in: str) -> Frame:
        return build_frame(
            _stats(breakers={"tools": tools}),
            seq=1,
            t=0.0,
            unix_s=0.0,
            interval_s=1.0,
            breakers={handed_in: lambda: user},
            telemetry={},
        )

    assert frame_with("user")["breakers"] == {"tools": tools, "user": user}
    with pytest.raises(ValueError, match="tools"):
        frame_with("tools")  # one name for two breakers is a wiring bug


def test_the_ledger_section_is_the_ledgers_statistics_or_none() -> None:
    def frame_of(stats: EngineStatistics) -> Frame:
        return build_frame(
            stats, seq=None, t=0.0, unix_s=0.0, interval_s=1.0, breakers={}, telemetry={}
        )

    assert frame_of(_stats())["ledger"] is None
    ledger = LedgerStats(
        mode="local_share",
        limit=8,
        queue_maxsize=20,
        local_share=2,
        permits_held=1,
        places_held=0,
        global_in_use=-1,
        global_waiting=-1,
        live_workers=4,
        admitted_total=9,
        rejected_total=1,
        fallbacks_total=1,
        errors_total=3,
    )
    frame = frame_of(dataclasses.replace(_stats(), ledger=ledger))
    assert frame["ledger"] == dataclasses.asdict(ledger)
    assert msgspec.json.decode(msgspec.json.encode(frame)) == frame


def test_no_persister_means_an_empty_persister_section() -> None:
    frame = build_frame(
        _stats(), seq=None, t=0.0, unix_s=0.0, interval_s=1.0, breakers={}, telemetry={}
    )
    assert frame["persister"] == {}
    assert frame["breakers"] == {}


def test_the_ring_keeps_the_newest_frames_and_counts_evictions() -> None:
    ring = FrameRing(3)
    for i in range(5):
        ring.push({"seq": i})
    assert [f["seq"] for f in ring.recent()] == [2, 3, 4]
    assert ring.latest() == {"seq": 4}
    assert len(ring) == 3 and ring.size == 3 and ring.evicted == 2


@pytest.mark.parametrize(
    "field, value",
    [("interval_s", 0.0), ("ring_size", 0), ("subscriber_buffer", -1), ("max_subscribers", 0)],
)
def test_settings_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        TelemetrySettings(**{field: value})


# -- the hub and the sampler ------------------------------------------------------------


async def test_sampler_publishes_on_a_fixed_grid_into_a_bounded_ring(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeEngine()
    hub = TelemetryHub(fake.statistics, TelemetrySettings(interval_s=0.5, ring_size=4))
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry_sampler, hub)
        assert [f["seq"] for f in hub.recent()] == [1]  # the first frame is there at start
        await trio.sleep(0.5 * 9 + 0.25)
        nursery.cancel_scope.cancel()
    frames = hub.recent()
    assert [f["seq"] for f in frames] == [7, 8, 9, 10]
    assert [f["t"] for f in frames] == pytest.approx([3.0, 3.5, 4.0, 4.5])
    assert [f["channels"]["parse.out"]["current_buffer_used"] for f in frames] == [7, 8, 9, 10]
    stats = hub.statistics()
    assert stats["frames_total"] == 10
    assert stats["ring_frames"] == 4 and stats["ring_size"] == 4
    assert stats["ring_evicted_total"] == 6


async def test_a_slow_subscriber_never_blocks_the_sampler_and_its_drops_are_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fake = FakeEngine()
    settings = TelemetrySettings(interval_s=1.0, subscriber_buffer=2)
    hub = TelemetryHub(fake.statistics, settings)
    fast_got: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(telemetry_sampler, hub)
        slow = hub.subscribe()  # never reads
        fast = hub.subscribe()

        async def read_fast() -> None:
            async for frame in fast:
                fast_got.append(frame["seq"])

        nursery.start_soon(read_fast)
        await trio.sleep(10.5)
        # The sampler kept its pace although the slow subscriber's buffer filled at once.
        assert hub.counters.frames_total == 11
        stats = hub.statistics()
        assert stats["subscribers"] == 2
        assert stats["subscriber_buffer_size"] == 2
        assert stats["subscriber_buffers_used"] == 2  # the slow one is full, the fast one empty
        nursery.cancel_scope.cancel()
    assert slow.history[0]["seq"] == 1
    assert slow.dropped == 10 - 2  # frames 2..11 offered, two kept
    assert hub.counters.dropped_total == slow.dropped
    assert fast.dropped == 0
    assert fast_got == list(range(2, 12))
    # What the slow one kept are the oldest it was offered; newer frames were dropped.
    kept = [slow.frames.receive_nowait()["seq"] for _ in range(2)]
    assert kept == [2, 3]


async def test_cancelling_the_sampler_ends_every_subscription_and_refuses_new_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = TelemetryHub(FakeEngine().statistics, TelemetrySettings(interval_s=1.0))
    got: list[int] = []
    async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
        await nursery.start(telemetry_sampler, hub)
        subscription = hub.subscribe()

        async def reader() -> None:
            with subscription:
                async for frame in subscription:  # ends when the hub closes
                    got.append(frame["seq"])

        outer.start_soon(reader)
        await trio.sleep(2.5)
        nursery.cancel_scope.cancel()
    assert got == [2, 3]
    assert hub.subscribers == 0
    with pytest.raises(EngineClosed):
        hub.subscribe()


async def test_subscribers_are_bounded_and_a_departed_one_is_forgotten() -> None:
    hub = TelemetryHub(FakeEngine().statistics, TelemetrySettings(max_subscribers=2))
    first = hub.subscribe()
    second = hub.subscribe()
    with pytest.raises(AdmissionRejected, match="Too many telemetry subscribers"):
        hub.subscribe()
    assert hub.counters.subscribers_refused_total == 1
    # Closing only the receive end (no unsubscribe): the next publish notices.
    first.frames.close()
    hub.tick()
    assert hub.subscribers == 1
    second.close()
    assert hub.subscribers == 0
    third = hub.subscribe()
    assert [f["seq"] for f in third.history] == [1]
    third.close()


# -- against a real engine and the mock OpenRouter -----------------------------------------


async def test_frames_show_a_blocked_consumer_filling_its_outbox_and_the_fetcher_waiting() -> None:
    window = 64
    async with (
        mock_server() as server,
        # idle_flush_ms=0: the batcher holds no run back on a timer, so once the fetcher
        # waits for credit nothing is left moving for long.
        running_engine(
            server, request_window_events=window, update_char_limit=1, idle_flush_ms=0
        ) as engine,
    ):
        hub = TelemetryHub(engine.statistics, TelemetrySettings(interval_s=0.02))
        async with trio.open_nursery() as nursery:
            await nursery.start(telemetry_sampler, hub)
            with hub.subscribe() as subscription:
                stream = engine.submit(request("text", tokens=100_000, seed=1))
                text = ""
                async for event in stream:
                    if isinstance(event, TextDelta):
                        text += event.text
                        if len(text) > 200:
                            break  # the consumer stops reading (without closing)

                # Stalled, and settled: three frames in a row with the same numbers (what
                # was already past the fetcher when it stopped has landed in the outbox).
                settled: list[tuple[int, int]] = []
                with trio.fail_after(30):
                    async for frame in subscription:
                        if frame["flow"]["fetchers_waiting_credit"] != 1:
                            continue
                        used = frame["channels"]["request.outbox"]["current_buffer_used"]
                        settled = [*settled[-2:], (used, frame["flow"]["credits_in_flight"])]
                        if len(settled) == 3 and len(set(settled)) == 1:
                            break
            nursery.cancel_scope.cancel()
        outbox = frame["channels"]["request.outbox"]
        assert 1 <= outbox["current_buffer_used"] <= outbox["max_buffer_size"]
        assert outbox["instances"] == 1
        assert window - 8 < frame["flow"]["credits_in_flight"] <= window
        assert frame["admission"]["in_flight"] == 1
        assert frame["admission"]["admitted_total"] == 1
        for name in ("fetch.out", "parse.out", "reorder.out", "batch.out"):
            assert frame["channels"][name]["current_buffer_used"] == 0, name
        # The sample is the engine's own numbers: while stalled they do not move.
        now = engine.statistics()
        assert outbox["current_buffer_used"] == now.channels["request.outbox"].current_buffer_used
        assert frame["flow"]["credits_in_flight"] == now.flow.credits_in_flight
        await stream.aclose()


async def test_frames_count_admission_rejections_and_waiting_requests() -> None:
    async with (
        mock_server() as server,
        running_engine(
            server, max_concurrent_requests=1, queue_maxsize=1, shutdown_grace_s=0.1
        ) as engine,
    ):
        hub = TelemetryHub(engine.statistics)
        running = engine.submit(request("stall", stall_after=0))
        waiting = engine.submit(request("text"))
        with pytest.raises(AdmissionRejected):
            engine.submit(request("text"))
        await wait_until(lambda: engine.statistics().admission.in_flight == 1)
        frame = hub.tick()
        assert frame["admission"]["in_flight"] == 1
        assert frame["admission"]["waiting"] == 1
        assert frame["admission"]["rejected_total"] == 1
        assert frame["admission"]["max_concurrent"] == 1
        await running.aclose()
        await collect(waiting)
        frame = hub.tick()
        assert frame["admission"]["in_flight"] == 0
        assert frame["endings"].get("cancelled") == 1
        assert frame["endings"].get("completed") == 1


async def test_frames_show_the_persister_backlog_while_the_store_is_down() -> None:
    store = MemoryStore()
    store.down = True
    async with (
        mock_server() as server,
        running_engine(
            server, artifacts=store, persist_retry_initial_s=0.05, persist_retry_max_s=0.1
        ) as engine,
    ):
        hub = TelemetryHub(engine.statistics)
        for i in range(3):
            req = request("reasoning", tokens=3, seed=i)
            context = ArtifactContext(chat_id="chat-1", message_id=f"msg-{req.request_id}")
            await collect(engine.submit(dataclasses.replace(req, artifacts=context)))
        await wait_until(lambda: engine.statistics().actors["persister"].get("now_degraded") == 1)
        frame = hub.tick()
        backlog = frame["persister"]["backlog"]
        assert backlog + frame["channels"]["persist.in"]["current_buffer_used"] == 3
        assert frame["persister"]["degraded"] == 1
        store.down = False  # let the shutdown flush finish quickly
        await wait_until(lambda: len(store.rows) == 3)
        await wait_until(lambda: hub.tick()["persister"]["backlog"] == 0)
