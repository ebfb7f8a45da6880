"""Seeded cancellation fuzz of the tool loop: stopped anywhere, nothing hangs and nothing is lost.

Requests whose model calls tools for several rounds are cancelled at random
points: at once, after some events (in a stream or in a tool round), by
closing the stream, or never. Whatever happens, each request ends exactly
once, no tool task or request is left, every artifact the persister took is
written exactly once, and a stored tool output always has its stored call
(a call may lack an output only when its turn was cut before tools ran;
replay drops those).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from typing import Any

import pytest
import trio

from orpipe.engine import Cancelled, Completed, Ending, Failed, Incomplete, OutboundEvent
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.tools import Tool, toolbox
from tests.actors.fakes import tasks_named
from tests.engine.support import MemoryStore, mock_server, request, running_engine, wait_until

ENDINGS = (Completed, Incomplete, Failed, Cancelled)
MODES = ["read all", "close early", "cancel early", "cancel at once"]
REQUESTS = 60


def weather(rng: random.Random) -> Tool:
    hangs = rng.random() < 0.2

    async def get_weather(args: dict[str, Any]) -> str:
        if hangs:
            await trio.sleep_forever()
        await trio.sleep(rng.random() * 0.03)
        return f"sunny in {args.get('location')}"

    return Tool(name="get_weather", function=get_weather, parameters={"type": "object"})


@pytest.mark.parametrize("seed", [3, 11, 29])
async def test_cancelling_tool_loops_anywhere_loses_nothing(seed: int) -> None:
    store = MemoryStore()
    outcomes: dict[int, tuple[str, list[OutboundEvent], Ending | None]] = {}
    async with (
        mock_server() as server,
        running_engine(
            server,
            artifacts=store,
            max_concurrent_requests=12,
            queue_maxsize=REQUESTS,
            tool_timeout_s=0.5,
            max_parallel_tools_per_request=2,
            request_window_events=8,
        ) as engine,
    ):

        async def one(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            mode = rng.choice(MODES)
            base = request("tools", calls=rng.randint(1, 4), rounds=rng.randint(1, 3), tokens=8)
            req = dataclasses.replace(
                base,
                tools=toolbox(weather(rng)),
                artifacts=ArtifactContext(chat_id="fuzz", message_id=f"m{index}"),
            )
            stop_at = rng.randint(0, 30)
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

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for index in range(REQUESTS):
                    nursery.start_soon(one, index)
        await wait_until(lambda: engine.statistics().flow.open_requests == 0)
        await wait_until(lambda: not tasks_named("tools "))
        stats = engine.statistics()

    for index, (mode, events, ending) in outcomes.items():
        assert ending is not None, (index, mode)
        endings = [e for e in events if isinstance(e, ENDINGS)]
        assert len(endings) <= 1 and (not endings or events[-1] is endings[0]), (index, mode)
    assert stats.actors["tools"].get("artifacts_lost", 0) == 0
    assert stats.actors.get("persister", {}).get("lost", 0) == 0
    accepted = stats.actors["persister"]["accepted"]
    assert accepted == len(store.rows)  # the engine closed: every accepted artifact is written
    assert set(store.writes_per_id.values()) == {1}  # and written once
    by_message: dict[str, dict[str, set[str]]] = collections.defaultdict(
        lambda: {"function_call": set(), "function_call_output": set()}
    )
    for artifact in store.rows.values():
        if artifact.item_type in ("function_call", "function_call_output"):
            by_message[artifact.message_id][artifact.item_type].add(artifact.payload["call_id"])
    assert by_message, "the fuzz never reached a tool call"
    for message, kinds in by_message.items():
        assert kinds["function_call_output"] <= kinds["function_call"], message
    # Some rounds really ran, and some were really cut short.
    assert stats.actors["tools"]["calls_completed"] > 0
    assert (
        stats.actors["tools"].get("calls_cancelled", 0)
        + stats.actors["tools"].get("calls_timed_out", 0)
        > 0
    )
