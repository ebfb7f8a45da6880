"""The function-calling loop end to end: engine ⇄ mock OpenRouter over loopback, fake tools.

The mock's ``tools`` scenario asks for ``mock.calls`` calls per turn for
``mock.rounds`` turns, then answers in text; it rejects (HTTP 400) what
OpenRouter rejects: a ``function_call_output`` without its call, or an
item status other than completed / incomplete / in_progress.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.messages import (
    Cancelled,
    ChatRequest,
    Completed,
    Failed,
    Notice,
    OutputItem,
    Status,
    Usage,
)
from orpipe.engine.tools import Tool, toolbox
from tests.actors.fakes import tasks_named
from tests.engine.support import (
    MemoryStore,
    collect,
    mock_server,
    request,
    running_engine,
    wait_until,
)

PARAMETERS = {"type": "object", "properties": {"location": {"type": "string"}}}


async def get_weather(args: dict[str, Any]) -> dict[str, Any]:
    await trio.sleep(0.001)
    return {"location": args["location"], "celsius": 21}


def with_tools(req: ChatRequest, *tools: Tool, chat: bool = False) -> ChatRequest:
    artifacts = ArtifactContext(chat_id="chat-1", message_id="msg-1") if chat else None
    return dataclasses.replace(req, tools=toolbox(*tools), artifacts=artifacts)


def weather_tool(function: Any = get_weather, name: str = "get_weather") -> Tool:
    return Tool(name=name, function=function, parameters=PARAMETERS, description="Weather")


def items(events: list[Any], kind: str) -> list[dict[str, Any]]:
    return [e.item for e in events if isinstance(e, OutputItem) and e.item["type"] == kind]


async def test_several_rounds_of_calls_then_the_answer() -> None:
    store = MemoryStore()
    async with mock_server() as server, running_engine(server, artifacts=store) as engine:
        req = with_tools(request("tools", calls=3, rounds=2, tokens=12), weather_tool(), chat=True)
        out = await collect(engine.submit(req))
        stats = engine.statistics()
    assert isinstance(out.ending, Completed), out.ending
    assert server.stats.requests_total == 3  # two tool turns and the answer
    calls = items(out.events, "function_call")
    outputs = items(out.events, "function_call_output")
    assert [c["call_id"] for c in calls] == [f"call_{n}" for n in range(1, 7)]
    assert [o["call_id"] for o in outputs] == [c["call_id"] for c in calls]
    assert all('"celsius":21' in o["output"] for o in outputs)
    assert len(out.of_type(Usage)) == 3  # one per turn; consumers add them up
    assert out.text and out.ending.text_chars == len(out.text)
    assert [s.description for s in out.of_type(Status)].count("Calling get_weather…") == 6
    # Calls and outputs are stored, and pair up by call id.
    await wait_until(lambda: len(store.rows) == 12)
    stored = [a.payload for a in store.rows.values()]
    stored_calls = {p["call_id"] for p in stored if p["type"] == "function_call"}
    stored_outputs = {p["call_id"] for p in stored if p["type"] == "function_call_output"}
    assert stored_calls == stored_outputs == {c["call_id"] for c in calls}
    assert stats.actors["tools"]["calls_completed"] == 6
    assert stats.actors["emitter"]["tool_rounds"] == 2
    assert "tools.in" in stats.channels and "request.turns" in stats.channels
    # Every call succeeded: the tool breaker tracks nothing and nothing is open.
    assert stats.breakers["tools"]["tracked"] == stats.breakers["tools"]["open"] == 0


async def test_failed_calls_are_sent_back_in_a_form_openrouter_accepts() -> None:
    async def broken(args: dict[str, Any]) -> str:
        raise TimeoutError("the weather station is offline")

    async with mock_server() as server, running_engine(server) as engine:
        req = with_tools(request("tools", calls=2, rounds=1), weather_tool(broken))
        out = await collect(engine.submit(req))
        breaker = engine.statistics().breakers["tools"]
    # Two failures of one (user, tool) key: tracked, below the threshold, still closed.
    assert (breaker["tracked"], breaker["closed"], breaker["open"]) == (1, 1, 0)
    assert isinstance(out.ending, Completed), out.ending  # the mock would 400 otherwise
    outputs = items(out.events, "function_call_output")
    assert {o["status"] for o in outputs} == {"incomplete"}
    assert outputs[0]["output"].startswith("Error: it raised TimeoutError")


async def test_the_turn_limit_ends_the_loop_and_says_so() -> None:
    async with mock_server() as server, running_engine(server, max_function_call_loops=2) as engine:
        req = with_tools(request("tools", calls=1, rounds=5), weather_tool())
        out = await collect(engine.submit(req))
    assert isinstance(out.ending, Completed)
    assert server.stats.requests_total == 2
    assert "tool-call limit (max_function_call_loops = 2) was reached" in out.text
    notices = out.of_type(Notice)
    assert len(notices) == 1 and "get_weather" in notices[0].message
    # The last turn's calls were not run.
    assert len(items(out.events, "function_call")) == 2
    assert len(items(out.events, "function_call_output")) == 1


async def test_without_tools_the_calls_are_only_reported() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        out = await collect(engine.submit(request("tools", calls=2, rounds=1)))
    assert isinstance(out.ending, Completed)
    assert server.stats.requests_total == 1
    assert len(items(out.events, "function_call")) == 2
    assert not out.of_type(Status)


class Hanging:
    """A tool that never returns; ``started`` is set once a call is running."""

    def __init__(self) -> None:
        self.started = trio.Event()

    async def __call__(self, args: dict[str, Any]) -> str:
        self.started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_cancelling_during_a_tool_batch_ends_the_request_and_stores_every_pair() -> None:
    hang = Hanging()
    store = MemoryStore()
    async with mock_server() as server, running_engine(server, artifacts=store) as engine:
        req = with_tools(request("tools", calls=3, rounds=1), weather_tool(hang), chat=True)
        stream = engine.submit(req)
        events = []
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                async for event in stream:
                    events.append(event)

            nursery.start_soon(read)
            await hang.started.wait()
            engine.cancel(req.request_id, "the user pressed stop")
        await wait_until(lambda: len(store.rows) == 6)
        assert not tasks_named("tools ")
        assert engine.statistics().flow.open_requests == 0
    assert stream.ending == Cancelled(request_id=req.request_id, reason="the user pressed stop")
    outputs = [a.payload for a in store.rows.values() if a.item_type == "function_call_output"]
    assert len(outputs) == 3
    assert all(o["output"].startswith("Error: the request was stopped") for o in outputs)
    calls = {a.payload["call_id"] for a in store.rows.values() if a.item_type == "function_call"}
    assert calls == {o["call_id"] for o in outputs}


async def test_engine_shutdown_during_a_tool_round_flushes_and_ends_every_request() -> None:
    hang = Hanging()
    store = MemoryStore()
    events: list[Any] = []
    async with mock_server() as server, trio.open_nursery() as readers:  # noqa: SIM117
        # (Nested on purpose: the reader outlives the engine, and sees its ending.)
        async with running_engine(server, artifacts=store, shutdown_grace_s=0.2) as engine:
            req = with_tools(request("tools", calls=2, rounds=1), weather_tool(hang), chat=True)
            stream = engine.submit(req)

            async def read() -> None:
                async for event in stream:
                    events.append(event)

            readers.start_soon(read)
            await hang.started.wait()
        # Leaving the block closes the engine: the grace runs out, tools are cancelled.
    assert isinstance(stream.ending, Failed), events
    assert "engine stopped" in stream.ending.message
    assert len(store.rows) == 4  # both calls and both (cancelled) outputs
