"""The tool executor actor on its own: fake tools, fake requests, trio's clocks.

Each test plays the emitter (sends a ``ToolRound``), the consumer (reads the
request's outbound buffer, returning credits) and the fetcher (reads the
request's turn mailbox).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from orpipe.actors.tool_executor import tool_executor
from orpipe.engine.artifacts import Artifact, ArtifactContext
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import RequestDeadlineExceeded
from orpipe.engine.messages import (
    ChatRequest,
    JsonObject,
    NextTurn,
    OutboundEvent,
    OutputItem,
    Status,
    TextDelta,
    ToolsStopped,
    TurnMail,
)
from orpipe.engine.pipeline_messages import ToolRound
from orpipe.engine.request import RequestHandle
from orpipe.engine.statistics import ActorCounters
from orpipe.engine.tools import Tool, toolbox
from tests.actors.fakes import make_handle, tasks_named


def call(name: str, call_id: str, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }


@dataclass
class Run:
    """What one request saw of its tool round."""

    handle: RequestHandle
    events: list[OutboundEvent] = field(default_factory=list)
    mail: TurnMail | None = None

    @property
    def outputs(self) -> list[JsonObject]:
        return [
            e.item
            for e in self.events
            if isinstance(e, OutputItem) and e.item["type"] == "function_call_output"
        ]

    @property
    def output_by_call(self) -> dict[str, str]:
        return {str(o["call_id"]): str(o["output"]) for o in self.outputs}

    @property
    def statuses(self) -> list[str]:
        return [e.description for e in self.events if isinstance(e, Status)]


@dataclass
class Rig:
    config: EngineConfig
    rounds: trio.MemorySendChannel[ToolRound]
    persisted: list[Artifact]
    counters: ActorCounters
    nursery: trio.Nursery
    breakers: dict[str, Callable[[], Mapping[str, int]]]

    def start(
        self,
        tools: Sequence[Tool],
        calls: Sequence[dict[str, Any]],
        *,
        user: str = "alice",
        turn: int = 0,
        artifacts: bool = True,
        deadline: float = float("inf"),
        carried: tuple[OutboundEvent, ...] = (),
    ) -> Run:
        request = ChatRequest(
            model="m",
            input=(),
            user_id=user,
            tools=toolbox(*tools),
            artifacts=ArtifactContext(chat_id="chat", message_id="msg") if artifacts else None,
        )
        handle = make_handle(request=request, window_events=4, deadline=deadline)
        run = Run(handle)
        tool_round = ToolRound(
            handle=handle,
            turn=turn,
            output=tuple(calls),
            calls=tuple(calls),
            carried=carried,
        )
        self.rounds.send_nowait(tool_round)
        self.nursery.start_soon(_consume, run)
        return run

    async def finish(self, *runs: Run) -> None:
        """Wait for each run's mail (the fetcher's side)."""
        for run in runs:
            run.mail = await run.handle.turns_receive.receive()
            await trio.testing.wait_all_tasks_blocked()  # let the consumer read the rest

    def stat(self, name: str) -> int:
        return self.counters.snapshot().get(name, 0)

    def breaker(self) -> dict[str, int]:
        """The tool breaker's counts as the executor reported them (for statistics)."""
        counts = self.breakers["tools"]()
        return {key: counts[key] for key in ("tracked", "closed", "open", "half_open")}


async def _consume(run: Run) -> None:
    """A reader that keeps up: every batch's credits go back at once."""
    async for batch in run.handle.outbox_receive:
        run.events.extend(batch.events)
        run.handle.window.release(batch.credits)


@asynccontextmanager
async def executor_rig(**config: Any) -> AsyncIterator[Rig]:
    cfg = EngineConfig(**config)
    rounds_send, rounds_receive = trio.open_memory_channel[ToolRound](10)
    persist_send, persist_receive = trio.open_memory_channel[tuple[Artifact, ...]](100)
    persisted: list[Artifact] = []
    counters = ActorCounters()
    breakers: dict[str, Callable[[], Mapping[str, int]]] = {}

    async def store() -> None:
        async for bundle in persist_receive:
            persisted.extend(bundle)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store)
        await nursery.start(
            functools.partial(
                tool_executor,
                rounds_receive,
                persist_send,
                config=cfg,
                counters=counters,
                report_breaker=breakers.__setitem__,
            )
        )
        async with rounds_send:
            yield Rig(cfg, rounds_send, persisted, counters, nursery, breakers)
        nursery.cancel_scope.cancel()  # the store and the consumers


# --- fake tools ------------------------------------------------------------------


async def echo(args: dict[str, Any]) -> str:
    return f"echo {args.get('text', '')}"


def tool(name: str, function: Callable[..., Any], **kw: Any) -> Tool:
    return Tool(name=name, function=function, parameters={"type": "object"}, **kw)


class Probe:
    """An async tool that records how many of its calls run at once."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.running = 0
        self.peak = 0
        self.calls = 0

    async def __call__(self, args: dict[str, Any]) -> str:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await trio.sleep(float(args.get("s", self.seconds)))
        finally:
            self.running -= 1
        return f"slept {args.get('s', self.seconds)}"


# --- the happy path ----------------------------------------------------------------


async def test_outputs_follow_the_models_order_and_feed_the_next_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    slow = Probe()
    async with executor_rig() as rig:
        calls = [
            call("slow", "c1", s=3),
            call("echo", "c2", text="hi"),
            call("slow", "c3", s=1),
        ]
        run = rig.start([tool("slow", slow), tool("echo", echo)], calls, turn=2)
        await rig.finish(run)
    assert [o["call_id"] for o in run.outputs] == ["c1", "c2", "c3"]
    assert run.output_by_call == {"c1": "slept 3", "c2": "echo hi", "c3": "slept 1"}
    assert all(o["status"] == "completed" for o in run.outputs)
    assert isinstance(run.mail, NextTurn)
    assert run.mail.turn == 3
    # The turn's output items first, then the tool outputs, in order.
    assert [i["type"] for i in run.mail.more_input] == ["function_call"] * 3 + [
        "function_call_output"
    ] * 3
    assert [i["call_id"] for i in run.mail.more_input[3:]] == ["c1", "c2", "c3"]


async def test_each_call_shows_a_status_when_it_starts_and_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with executor_rig() as rig:
        run = rig.start([tool("get_weather", Probe(0.8))], [call("get_weather", "c1")])
        await rig.finish(run)
    assert run.statuses == ["Calling get_weather…", "get_weather finished in 0.8 s"]
    done = [e.done for e in run.events if isinstance(e, Status)]
    assert done == [False, True]


async def test_events_the_emitter_could_not_deliver_come_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with executor_rig() as rig:
        carried = (TextDelta(request_id="x", text="before tools"),)
        run = rig.start([tool("echo", echo)], [call("echo", "c1")], carried=carried)
        await rig.finish(run)
    assert run.events[0] == carried[0]


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ({"temp": 21, "tags": ["a", "b"]}, '{"temp":21,"tags":["a","b"]}'),
        (42, "42"),
        (None, ""),
        (b"bytes \xff", "bytes \ufffd"),
        (("t", 1), '["t",1]'),
    ],
)
async def test_non_string_results_become_text(returned: object, expected: str) -> None:
    async def give(args: dict[str, Any]) -> object:
        return returned

    async with executor_rig() as rig:
        run = rig.start([tool("give", give)], [call("give", "c1")])
        await rig.finish(run)
    assert run.output_by_call == {"c1": expected}


async def test_an_object_json_cannot_hold_is_given_as_its_str() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    async def give(args: dict[str, Any]) -> object:
        return Thing()

    async with executor_rig() as rig:
        run = rig.start([tool("give", give)], [call("give", "c1")])
        await rig.finish(run)
    assert run.output_by_call == {"c1": "a thing"}


async def test_huge_output_is_cut_with_a_note() -> None:
    async def flood(args: dict[str, Any]) -> str:
        return "x" * 1_000_000

    async with executor_rig(tool_output_max_chars=1000) as rig:
        run = rig.start([tool("flood", flood)], [call("flood", "c1")])
        await rig.finish(run)
    text = run.output_by_call["c1"]
    assert text.startswith("x" * 1000)
    assert len(text) < 1200
    assert "1,000 of 1,000,000 characters" in text


async def test_blocking_tools_run_in_worker_threads() -> None:
    trio_thread = threading.get_ident()
    seen: list[int] = []

    def blocking(args: dict[str, Any]) -> str:
        seen.append(threading.get_ident())
        return "from a thread"

    async with executor_rig() as rig:
        run = rig.start([tool("blocking", blocking)], [call("blocking", "c1")])
        await rig.finish(run)
    assert run.output_by_call == {"c1": "from a thread"}
    assert seen and seen[0] != trio_thread


# --- failures the model reads -------------------------------------------------------


async def test_bad_arguments_unknown_tools_and_exceptions_become_failed_outputs() -> None:
    async def boom(args: dict[str, Any]) -> str:
        raise ValueError("the weather service said no")

    calls = [
        {**call("echo", "c1"), "arguments": "{not json"},
        {**call("echo", "c2"), "arguments": "[1, 2]"},
        call("nope", "c3"),
        call("boom", "c4"),
        call("echo", "c5", text="still fine"),
    ]
    async with executor_rig() as rig:
        run = rig.start([tool("echo", echo), tool("boom", boom)], calls)
        await rig.finish(run)
    out = run.output_by_call
    assert out["c1"] == "Error: its arguments are not valid JSON"
    assert out["c2"] == "Error: its arguments are not a JSON object"
    assert out["c3"].startswith("Error: there is no tool named 'nope' (available: boom, echo)")
    assert out["c4"] == "Error: it raised ValueError: the weather service said no"
    assert out["c5"] == "echo still fine"
    statuses = {o["call_id"]: o["status"] for o in run.outputs}
    assert statuses == {
        "c1": "incomplete",
        "c2": "incomplete",
        "c3": "incomplete",
        "c4": "incomplete",
        "c5": "completed",
    }
    assert isinstance(run.mail, NextTurn)  # the request goes on
    assert "boom failed: it raised ValueError: the weather service said no" in run.statuses


async def test_a_call_that_times_out_fails_and_the_round_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def hang(args: dict[str, Any]) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with executor_rig(tool_timeout_s=60) as rig:
        start = trio.current_time()
        run = rig.start(
            [tool("hang", hang), tool("echo", echo)], [call("hang", "c1"), call("echo", "c2")]
        )
        await rig.finish(run)
        assert trio.current_time() - start == pytest.approx(60)
    assert run.output_by_call == {"c1": "Error: timed out after 60 s", "c2": "echo "}
    assert "hang failed: timed out after 60 s" in run.statuses
    assert isinstance(run.mail, NextTurn)
    assert rig.stat("calls_timed_out") == 1


async def test_calls_of_a_batch_run_together(autojump_clock: trio.testing.MockClock) -> None:
    probe = Probe()
    async with executor_rig(tool_timeout_s=50, tool_batch_timeout_s=70, tool_batch_cap=4) as rig:
        calls = [call("slow", "c1", s=40), call("slow", "c2", s=40)]
        start = trio.current_time()
        run = rig.start([tool("slow", probe)], calls)
        await rig.finish(run)
        assert trio.current_time() - start == pytest.approx(40)
    assert probe.peak == 2
    assert run.output_by_call == {"c1": "slept 40", "c2": "slept 40"}
    assert rig.stat("batches") == 1


async def test_a_batch_over_its_limit_is_stopped_and_each_call_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe()
    config = dict(
        tool_timeout_s=50,
        tool_batch_timeout_s=70,
        tool_batch_cap=4,
        max_parallel_tools_per_request=1,
    )
    async with executor_rig(**config) as rig:
        calls = [call("slow", "c1", s=40), call("slow", "c2", s=40)]
        start = trio.current_time()
        run = rig.start([tool("slow", probe)], calls)
        await rig.finish(run)
        assert trio.current_time() - start == pytest.approx(70)
    # One slot: whichever call got it first finished; the other was stopped.
    assert sorted(run.output_by_call.values()) == [
        "Error: the batch of slow calls took longer than 70 s and was stopped",
        "slept 40",
    ]
    assert rig.stat("batch_timeouts") == 1


async def test_the_batch_limit_is_at_least_the_call_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with executor_rig(tool_timeout_s=100, tool_batch_timeout_s=10) as rig:
        run = rig.start([tool("slow", Probe())], [call("slow", "c1", s=90)])
        await rig.finish(run)
    assert run.output_by_call == {"c1": "slept 90"}


async def test_idle_timeout_stops_a_round_where_nothing_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe()
    async with executor_rig(tool_idle_timeout_s=30, tool_timeout_s=600) as rig:
        calls = [call("slow", "c1", s=20), call("slow", "c2", s=45), call("slow", "c3", s=500)]
        start = trio.current_time()
        run = rig.start([tool("slow", probe)], calls)
        await rig.finish(run)
        # c1 ends at 20 (progress), c2 at 45 (within 30 of 20), then 30 s of nothing.
        assert trio.current_time() - start == pytest.approx(75)
    out = run.output_by_call
    assert out["c1"] == "slept 20"
    assert out["c2"] == "slept 45"
    assert out["c3"] == "Error: no tool call finished for 30 s, so it was stopped"
    assert isinstance(run.mail, NextTurn)
    assert rig.stat("idle_timeouts") == 1


# --- limits ------------------------------------------------------------------------


async def test_per_request_limit(autojump_clock: trio.testing.MockClock) -> None:
    probe = Probe(10)
    async with executor_rig(max_parallel_tools_per_request=2, tool_batch_cap=32) as rig:
        run = rig.start([tool("slow", probe)], [call("slow", f"c{i}") for i in range(7)])
        start = trio.current_time()
        await rig.finish(run)
        assert trio.current_time() - start == pytest.approx(40)  # ceil(7 / 2) waves
    assert probe.peak == 2
    assert rig.stat("per_request_limit_waits") >= 5


async def test_global_limit_across_requests(autojump_clock: trio.testing.MockClock) -> None:
    probe = Probe(10)
    async with executor_rig(max_parallel_tools_global=3, max_parallel_tools_per_request=5) as rig:
        runs = [
            rig.start([tool("slow", probe)], [call("slow", f"r{r}c{i}") for i in range(2)])
            for r in range(3)
        ]
        await rig.finish(*runs)
    assert probe.peak == 3
    assert rig.stat("global_limit_waits") >= 1


# --- batching and order -------------------------------------------------------------


async def test_sequential_calls_wait_for_the_earlier_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: dict[str, float] = {}

    async def timed(args: dict[str, Any]) -> str:
        starts[args["tag"]] = trio.current_time()
        await trio.sleep(float(args["s"]))
        return args["tag"]

    calls = [
        call("timed", "c1", tag="a", s=10),
        call("timed", "c2", tag="b", s=10, sequential=True),
        call("other", "c3", tag="c", s=1),
        call("timed", "c4", tag="d", s=1, depends_on="c3"),
    ]
    async with executor_rig() as rig:
        t0 = trio.current_time()
        run = rig.start([tool("timed", timed), tool("other", timed)], calls)
        await rig.finish(run)
    rel = {k: v - t0 for k, v in starts.items()}
    assert rel["a"] == pytest.approx(0)
    assert rel["b"] == pytest.approx(10)  # after a
    assert rel["c"] == pytest.approx(10)  # not ordered itself, but after b's barrier
    assert rel["d"] == pytest.approx(20)  # after b and c
    assert [o["call_id"] for o in run.outputs] == ["c1", "c2", "c3", "c4"]


# --- retries --------------------------------------------------------------------------


async def test_calls_are_not_retried_unless_the_tool_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    attempts = {"once": 0, "safe": 0}

    def flaky(name: str) -> Callable[[dict[str, Any]], Any]:
        async def run(args: dict[str, Any]) -> str:
            attempts[name] += 1
            if attempts[name] == 1:
                raise ConnectionError("flaky")
            return "second time lucky"

        return run

    async with executor_rig() as rig:
        run = rig.start(
            [tool("once", flaky("once")), tool("safe", flaky("safe"), retry_safe=True)],
            [call("once", "c1"), call("safe", "c2")],
        )
        await rig.finish(run)
    assert attempts == {"once": 1, "safe": 2}
    assert run.output_by_call == {
        "c1": "Error: it raised ConnectionError: flaky",
        "c2": "second time lucky",
    }


async def test_a_timeout_is_not_retried_even_for_a_safe_tool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe(100)
    async with executor_rig(tool_timeout_s=10) as rig:
        run = rig.start([tool("slow", probe, retry_safe=True)], [call("slow", "c1")])
        await rig.finish(run)
    assert probe.calls == 1
    assert run.output_by_call["c1"] == "Error: timed out after 10 s"


# --- breakers per user and tool ------------------------------------------------------


async def test_breaker_pauses_one_tool_of_one_user_then_probes_and_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    healthy = {"flaky": False}

    async def flaky(args: dict[str, Any]) -> str:
        await trio.sleep(1)  # a trial is still running when its sibling call checks
        if not healthy["flaky"]:
            raise RuntimeError("down")
        return "up again"

    tools = [tool("flaky", flaky), tool("echo", echo)]
    async with executor_rig(
        tool_breaker_failures=3, tool_breaker_window_s=60, tool_breaker_cooldown_s=30
    ) as rig:
        for i in range(3):
            await rig.finish(rig.start(tools, [call("flaky", f"f{i}")]))
        # Open for alice's flaky only: her echo and bob's flaky still run.
        run = rig.start(tools, [call("flaky", "f3"), call("echo", "e1", text="ok")])
        bob = rig.start(tools, [call("flaky", "b1")], user="bob")
        await rig.finish(run, bob)
        assert run.output_by_call["f3"] == "Error: failing repeatedly; paused for 30 s"
        assert "flaky skipped: failing repeatedly; paused for 30 s" in run.statuses
        assert run.output_by_call["e1"] == "echo ok"
        assert bob.output_by_call["b1"] == "Error: it raised RuntimeError: down"
        assert rig.stat("calls_skipped_breaker") == 1
        # alice's flaky is open; bob's one failure is tracked with the breaker closed.
        assert rig.breaker() == {"tracked": 2, "closed": 1, "open": 1, "half_open": 0}

        await trio.sleep(30)  # cool-down over: one trial, which fails: open again
        assert rig.breaker() == {"tracked": 2, "closed": 1, "open": 0, "half_open": 1}
        trial = rig.start(tools, [call("flaky", "t1"), call("flaky", "t2")])
        await rig.finish(trial)
        # One trial at a time: the other call is told to wait for it.
        assert sorted(trial.output_by_call.values()) == [
            "Error: failing repeatedly; paused for 5 s",
            "Error: it raised RuntimeError: down",
        ]
        skipped = rig.start(tools, [call("flaky", "s1")])
        await rig.finish(skipped)
        assert skipped.output_by_call["s1"].startswith("Error: failing repeatedly")

        await trio.sleep(30)
        healthy["flaky"] = True  # the trial succeeds: closed
        await rig.finish(trial2 := rig.start(tools, [call("flaky", "t3")]))
        await rig.finish(after := rig.start(tools, [call("flaky", "a1"), call("flaky", "a2")]))
        # Closed for good: alice's record is gone; bob's failure (within the window) stays.
        assert rig.breaker() == {"tracked": 1, "closed": 1, "open": 0, "half_open": 0}
    assert trial2.output_by_call == {"t3": "up again"}
    assert after.output_by_call == {"a1": "up again", "a2": "up again"}


async def test_bad_arguments_and_unknown_names_do_not_trip_the_breaker() -> None:
    async with executor_rig(tool_breaker_failures=1) as rig:
        bad = {**call("echo", "c1"), "arguments": "nope"}
        await rig.finish(rig.start([tool("echo", echo)], [bad, call("ghost", "c2")]))
        run = rig.start([tool("echo", echo)], [call("echo", "c3", text="fine")])
        await rig.finish(run)
    assert run.output_by_call == {"c3": "echo fine"}


# --- runaway threads ------------------------------------------------------------------


async def test_timed_out_threads_are_counted_and_refused_past_the_bound() -> None:
    release = threading.Event()

    def stuck(args: dict[str, Any]) -> str:
        release.wait(30)
        return "finally"

    def quick(args: dict[str, Any]) -> str:
        return "quick"

    tools = [tool("stuck", stuck), tool("quick", quick)]
    try:
        async with executor_rig(tool_timeout_s=0.05, tool_runaway_limit=2) as rig:
            first = rig.start(tools, [call("stuck", "c1"), call("stuck", "c2")])
            await rig.finish(first)
            assert first.output_by_call == {
                "c1": "Error: timed out after 0.05 s",
                "c2": "Error: timed out after 0.05 s",
            }
            assert rig.stat("now_runaway_threads") == 2
            refused = rig.start(tools, [call("stuck", "c3"), call("quick", "c4")])
            await rig.finish(refused)
            assert refused.output_by_call["c3"] == (
                "Error: 2 earlier calls of this tool are still running after timing out; "
                "try again later"
            )
            assert refused.output_by_call["c4"] == "quick"  # another tool is not affected
            assert rig.stat("calls_refused_runaway") == 1
            release.set()
            with trio.fail_after(10):
                while rig.stat("now_runaway_threads"):  # noqa: ASYNC110 - set from a thread
                    await trio.sleep(0.01)
            again = rig.start(tools, [call("stuck", "c5")])
            await rig.finish(again)
            assert again.output_by_call == {"c5": "finally"}
    finally:
        release.set()


# --- cancellation --------------------------------------------------------------------


async def test_cancelling_in_the_middle_of_a_batch_stops_it_and_still_stores_every_output(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe()
    async with executor_rig() as rig:
        calls = [call("slow", "c1", s=1), call("slow", "c2", s=100), call("slow", "c3", s=100)]
        run = rig.start([tool("slow", probe)], calls)
        await trio.sleep(5)
        assert probe.running == 2
        run.handle.cancel("the user pressed stop")
        await rig.finish(run)
        assert probe.running == 0
        assert not tasks_named("tools ")
    assert run.mail == ToolsStopped(
        request_id=run.handle.request_id, cancel_reason="the user pressed stop"
    )
    stored = {a.payload["call_id"]: a.payload for a in rig.persisted}
    assert stored["c1"]["output"] == "slept 1"
    assert stored["c2"]["output"] == "Error: the request was stopped before this call finished"
    assert stored["c3"]["status"] == "incomplete"
    assert [a.item_type for a in rig.persisted] == ["function_call_output"] * 3


async def test_the_deadline_stops_a_round_as_a_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with executor_rig(request_deadline_s=50) as rig:
        run = rig.start(
            [tool("slow", Probe())],
            [call("slow", "c1", s=100)],
            deadline=trio.current_time() + 50,
        )
        await rig.finish(run)
    assert isinstance(run.mail, ToolsStopped)
    assert isinstance(run.mail.failure, RequestDeadlineExceeded)
    assert run.mail.cancel_reason is None
    assert len(rig.persisted) == 1


async def test_a_request_already_cancelled_runs_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    probe = Probe()
    async with executor_rig() as rig:
        request = ChatRequest(model="m", input=(), tools=toolbox(tool("slow", probe)))
        handle = make_handle(request=request)
        handle.cancel("gone")
        rig.rounds.send_nowait(
            ToolRound(
                handle=handle,
                turn=0,
                output=(call("slow", "c1"),),
                calls=(call("slow", "c1"),),
            )
        )
        mail = await handle.turns_receive.receive()
    assert probe.calls == 0
    assert mail == ToolsStopped(request_id=handle.request_id, cancel_reason="gone")


async def test_without_an_artifact_context_nothing_is_stored() -> None:
    async with executor_rig() as rig:
        run = rig.start([tool("echo", echo)], [call("echo", "c1")], artifacts=False)
        await rig.finish(run)
    assert rig.persisted == []
    assert [e.artifact_id for e in run.events if isinstance(e, OutputItem)] == [None]


async def test_stored_outputs_carry_the_ids_the_consumer_sees() -> None:
    async with executor_rig() as rig:
        run = rig.start([tool("echo", echo)], [call("echo", "c1"), call("echo", "c2")])
        await rig.finish(run)
    ids = [e.artifact_id for e in run.events if isinstance(e, OutputItem)]
    assert ids == [a.artifact_id for a in rig.persisted]
    assert all(a.chat_id == "chat" and a.message_id == "msg" for a in rig.persisted)
