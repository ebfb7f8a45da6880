"""Tool calling through the Open WebUI pipe, against the mock OpenRouter in its own process.

Engine mode: the engine runs Open WebUI's ``__tools__`` (async callables on
Open WebUI's loop) for several rounds. Pass-through mode: the calls go back
to Open WebUI as ``delta.tool_calls``, and its follow-up request (tool results
as ``role: tool`` messages, shaped as 0.12.4 sends them) finishes the answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orpipe.engine.logs import stop_logging
from tests.adapters.asyncio_support import Mock
from tests.adapters.test_owui_pipe import (  # noqa: F401 - fixtures used by name
    Owui,
    Recording,
    _delta,
    _turn,
    artifact_database,
    assert_statuses_closed,
    body,
    bridge_kind,
    make_pipe,
    on_loop,
    read,
)
from tests.adapters.test_tool_specs import BUILTIN, builtin_tools

WEATHER_SPEC = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
}


class WeatherTool:
    """An Open WebUI tool: an async callable taking keyword arguments, on Open WebUI's loop."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.loops: set[int] = set()

    async def __call__(self, location: str, unit: str = "celsius") -> dict[str, Any]:
        self.loops.add(id(asyncio.get_running_loop()))
        self.calls.append({"location": location, "unit": unit})
        await asyncio.sleep(0.001)
        return {"location": location, "temperature": 21, "unit": unit}

    def entry(self) -> dict[str, Any]:
        return {"tool_id": "weather", "callable": self, "spec": WEATHER_SPEC, "type": "function"}


async def run(
    pipe: Any, owui: Owui, request: dict[str, Any], recording: Recording, **context: Any
) -> Any:
    return await _turn(pipe, owui, request, recording, chat_id="chat-t", **context)


def test_the_engine_runs_open_webui_tools_for_several_rounds(
    mock: Mock,
    bridge_kind: str,  # noqa: F811 - the fixture imported above
    loop_kind: str,
) -> None:
    tool = WeatherTool()
    recording = Recording(calls=2, rounds=2, tokens=8)

    async def scenario() -> None:
        pipe = make_pipe(mock, bridge_kind)
        owui = Owui()
        loop_id = id(asyncio.get_running_loop())
        answer = await read(
            await run(
                pipe, owui, body("mock.tools"), recording, tools={"get_weather": tool.entry()}
            )
        )
        assert answer.text and not answer.errors
        # Four calls, each on Open WebUI's own loop, with only the schema's arguments.
        assert len(tool.calls) == 4
        assert tool.loops == {loop_id}
        assert all(set(call) == {"location", "unit"} for call in tool.calls)
        descriptions = [s["description"] for s in owui.statuses()]
        # Each call opens its line; a repeated text is numbered ("Calling get_weather (2)…").
        calling = [s for s in owui.statuses() if s["description"].startswith("Calling get_weather")]
        assert sum(not s["done"] for s in calling) == 4
        assert sum(d.startswith("get_weather finished in") for d in descriptions) == 4
        # No blank, hidden or repeated entry, and nothing shimmers at the end.
        assert_statuses_closed(owui)
        # Usage is summed over the three model turns.
        usage = answer.usage
        assert usage is not None
        turns = [b for b in recording.bodies]
        assert len(turns) == 3
        assert usage["completion_tokens"] > 8
        # The tool went upstream strict; each turn sent back the calls and outputs so far.
        tools = turns[0]["tools"]
        assert tools[0]["name"] == "get_weather" and tools[0]["strict"] is True
        assert tools[0]["parameters"]["additionalProperties"] is False
        last_input = turns[-1]["input"]
        outputs = [i for i in last_input if i.get("type") == "function_call_output"]
        calls = [i for i in last_input if i.get("type") == "function_call"]
        assert len(outputs) == len(calls) == 4
        assert {o["status"] for o in outputs} == {"completed"}

    on_loop(loop_kind, scenario, limit_s=20)


def test_pass_through_returns_the_calls_and_takes_the_results_back(
    mock: Mock, loop_kind: str
) -> None:
    tool = WeatherTool()
    recording = Recording(calls=2, rounds=1, tokens=6)

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", TOOL_EXECUTION_MODE="open-webui")
        owui = Owui()
        first = await read(
            await run(
                pipe, owui, body("mock.tools"), recording, tools={"get_weather": tool.entry()}
            )
        )
        assert tool.calls == []  # Open WebUI runs them, not the pipe
        tool_calls = [tc for c in first.chunks for tc in _delta(c).get("tool_calls", [])]
        assert [tc["index"] for tc in tool_calls] == [0, 1]
        assert [tc["id"] for tc in tool_calls] == ["call_1", "call_2"]
        assert all(tc["type"] == "function" for tc in tool_calls)
        assert all(tc["function"]["name"] == "get_weather" for tc in tool_calls)
        assert len(recording.bodies) == 1

        # What 0.12.4 sends next: the assistant's tool_calls, then one tool message each.
        follow_up = body("mock.tools")
        follow_up["messages"] += [
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": tc["id"], "type": "function", "function": tc["function"]}
                    for tc in tool_calls
                ],
            },
            *(
                {"role": "tool", "tool_call_id": tc["id"], "content": '{"temperature": 21}'}
                for tc in tool_calls
            ),
        ]
        second = await read(
            await run(pipe, owui, follow_up, recording, tools={"get_weather": tool.entry()})
        )
        assert second.text and not second.errors
        sent = recording.bodies[-1]["input"]
        kinds = [i.get("type") for i in sent if i.get("type", "").startswith("function")]
        assert kinds == ["function_call", "function_call", "function_call_output"] * 1 + [
            "function_call_output"
        ]
        call_ids = {i["call_id"] for i in sent if i.get("type") == "function_call"}
        assert call_ids == {"call_1", "call_2"}
        # Both calls add to the one message's status list: round 2 does not repeat round 1.
        descriptions = [s["description"] for s in owui.statuses()]
        assert descriptions.index("Waiting for OpenRouter (round 2)…") > 0
        assert_statuses_closed(owui)

    on_loop(loop_kind, scenario, limit_s=20)


def test_pass_through_announces_an_api_clients_own_tools_once(mock: Mock, loop_kind: str) -> None:
    """No ``__tools__`` (an API client): the body's Chat Completions tools are announced."""
    recording = Recording(calls=1, rounds=1, tokens=4)

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", TOOL_EXECUTION_MODE="open-webui")
        request = body("mock.tools")
        spec = {**WEATHER_SPEC, "name": "weather.now"}  # a name providers refuse
        request["tools"] = [{"type": "function", "function": spec}]
        first = await read(await run(pipe, Owui(), request, recording))
        announced = recording.bodies[0].get("tools", [])
        assert [t["name"] for t in announced] == ["weather_now"]
        assert announced[0]["type"] == "function" and "function" not in announced[0]
        # The call goes back under the client's own name, which it can look up.
        calls = [tc for c in first.chunks for tc in _delta(c).get("tool_calls", [])]
        assert [tc["function"]["name"] for tc in calls] == ["weather.now"]

    on_loop(loop_kind, scenario, limit_s=20)


def test_pass_through_with_chat_tools_does_not_announce_the_body_copy(
    mock: Mock, loop_kind: str
) -> None:
    """A chat's tools arrive in ``__tools__`` and again in the body: announced once."""
    tool = WeatherTool()
    recording = Recording(calls=1, rounds=1, tokens=4)

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", TOOL_EXECUTION_MODE="open-webui")
        request = body("mock.tools")
        request["tools"] = [{"type": "function", "function": WEATHER_SPEC}]
        await read(await run(pipe, Owui(), request, recording, tools={"get_weather": tool.entry()}))
        announced = recording.bodies[0].get("tools", [])
        assert [t["name"] for t in announced] == ["get_weather"]

    on_loop(loop_kind, scenario, limit_s=20)


def test_title_tasks_never_get_tools(mock: Mock, loop_kind: str) -> None:
    tool = WeatherTool()
    recording = Recording(calls=2, rounds=1)

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest")
        owui = Owui()
        result = await run(
            pipe,
            owui,
            body("mock.text"),
            recording,
            tools={"get_weather": tool.entry()},
            task="title_generation",
        )
        assert isinstance(result, str)
        assert "tools" not in recording.bodies[0]

    on_loop(loop_kind, scenario, limit_s=20)


def test_remote_mcp_servers_go_upstream_each_as_its_own_tool(mock: Mock, loop_kind: str) -> None:
    servers = (
        '[{"server_label": "docs", "server_url": "https://mcp.example.com/sse"},'
        ' {"server_label": "git", "server_url": "wss://git.example.com/mcp",'
        ' "headers": {"Authorization": "Bearer secret-token"}}]'
    )
    recording = Recording(tokens=4)

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", REMOTE_MCP_SERVERS_JSON=servers)
        owui = Owui()
        answer = await read(await run(pipe, owui, body("mock.text"), recording))
        assert answer.text and not answer.errors
        tools = recording.bodies[0]["tools"]
        assert [(t["type"], t["server_label"]) for t in tools] == [("mcp", "docs"), ("mcp", "git")]
        assert tools[1]["headers"] == {"Authorization": "Bearer secret-token"}

    on_loop(loop_kind, scenario, limit_s=20)


@pytest.mark.parametrize("mode", ["engine", "open-webui"])
def test_open_webuis_built_in_tools_bring_no_warning(
    mock: Mock, loop_kind: str, mode: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """The built-in tools 0.12.4 adds to chats (here update_memory, replace_note_content
    and ask_user with their real specs) take free-form objects: they go upstream as
    Open WebUI sends them, the user gets no notification, the log a debug line each
    (the engine's console sink writes it to stderr from its own thread)."""
    recording = Recording(tokens=4)

    async def scenario() -> None:
        pipe = make_pipe(mock, "guest", TOOL_EXECUTION_MODE=mode, LOG_LEVEL="DEBUG")
        owui = Owui()
        answer = await read(
            await run(pipe, owui, body("mock.text"), recording, tools=builtin_tools())
        )
        assert answer.text and not answer.errors
        assert owui.of_type("notification") == []
        announced = {t["name"]: t for t in recording.bodies[0]["tools"]}
        assert set(announced) == set(BUILTIN)
        for name, tool in announced.items():
            assert "strict" not in tool
            assert tool["parameters"] == BUILTIN[name]["spec"]["parameters"]

    try:
        on_loop(loop_kind, scenario, limit_s=20)
    finally:
        stop_logging()  # flushes the console sink
    logged = capfd.readouterr().err
    for name in BUILTIN:
        assert f"tool {name!r} is one of Open WebUI's built-in tools" in logged
