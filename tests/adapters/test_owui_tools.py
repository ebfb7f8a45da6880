"""Open WebUI ``__tools__`` entries as engine tools, called from trio on Open WebUI's loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from orpipe.adapters.openwebui.tools import DeclaredTool, engine_tools, tool_result
from tests.adapters.asyncio_support import run_on
from tests.adapters.test_loop_calls import in_trio


class HTMLResponse:
    """The shape of starlette's HTMLResponse, as a tool returns it."""

    def __init__(self, body: str, *, inline: bool, status_code: int = 200) -> None:
        self.body = body.encode()
        self.status_code = status_code
        self.headers = {"content-disposition": "inline"} if inline else {}


SPEC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


def declared(entry: dict[str, Any], name: str = "get_weather") -> DeclaredTool:
    return DeclaredTool(
        name=name,
        entry=entry,
        description="Weather for a city",
        parameters={"type": "object"},
        strict=True,
    )


def call_tool(mode: str, entry: dict[str, Any], arguments: dict[str, Any], **kw: Any) -> object:
    """Call the wrapped tool from trio (``mode``: guest or thread) on a fresh asyncio loop."""
    result: list[object] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tools = engine_tools([declared(entry)], loop=loop, **kw)

        async def trio_side() -> object:
            return await tools["get_weather"].function(arguments)

        result.append(await in_trio(mode, trio_side))

    run_on("asyncio", main)
    return result[0]


@pytest.fixture(params=["guest", "thread"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_callable_runs_on_the_loop_with_keyword_arguments(mode: str) -> None:
    calls: list[dict[str, Any]] = []

    async def get_weather(city: str, unit: str = "celsius") -> str:
        asyncio.get_running_loop()  # raises outside a loop
        calls.append({"city": city, "unit": unit})
        return f"{city}: 21 {unit}"

    entry = {"tool_id": "weather", "callable": get_weather, "spec": SPEC}
    result = call_tool(mode, entry, {"city": "Oslo", "unit": None, "extra": 1})
    # ``extra`` is not in the schema; ``unit: null`` is strict mode's "left out".
    assert result == "Oslo: 21 celsius"
    assert calls == [{"city": "Oslo", "unit": "celsius"}]


def test_a_null_for_a_required_argument_is_passed_on(mode: str) -> None:
    async def get_weather(city: object, unit: str = "celsius") -> str:
        return f"city={city!r}"

    entry = {"tool_id": "weather", "callable": get_weather, "spec": SPEC}
    assert call_tool(mode, entry, {"city": None}) == "city=None"


def test_mcp_tools_get_every_argument() -> None:
    async def remote(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    entry = {"tool_id": "mcp", "callable": remote, "spec": SPEC, "type": "mcp"}
    assert call_tool("guest", entry, {"city": "Rome", "anything": [1]}) == {
        "city": "Rome",
        "anything": [1],
    }


def test_a_synchronous_callable_is_accepted() -> None:
    def get_weather(city: str) -> str:
        return f"sync {city}"

    entry = {"tool_id": "weather", "callable": get_weather, "spec": SPEC}
    assert call_tool("guest", entry, {"city": "Lima"}) == "sync Lima"


def test_direct_tools_go_through_event_call(mode: str) -> None:
    sent: list[dict[str, Any]] = []

    async def event_call(event: dict[str, Any]) -> object:
        sent.append(event)
        return {"ok": True}

    entry = {"tool_id": "server:1", "direct": True, "server": {"url": "x"}, "spec": SPEC}
    result = call_tool(mode, entry, {"city": "Nice"}, event_call=event_call, session_id="sess-1")
    assert result == {"ok": True}
    assert sent[0]["type"] == "execute:tool"
    data = sent[0]["data"]
    assert data["name"] == "get_weather" and data["params"] == {"city": "Nice"}
    assert data["server"] == {"url": "x"} and data["session_id"] == "sess-1"


def test_a_direct_tool_without_event_call_fails_clearly() -> None:
    entry = {"tool_id": "server:1", "direct": True, "spec": SPEC}
    with pytest.raises(RuntimeError, match="no __event_call__"):
        call_tool("guest", entry, {"city": "Nice"})


def test_an_exception_in_the_tool_reaches_the_engine() -> None:
    async def get_weather(city: str) -> str:
        raise ValueError("no such city")

    entry = {"tool_id": "weather", "callable": get_weather, "spec": SPEC}
    with pytest.raises(ValueError, match="no such city"):
        call_tool("guest", entry, {"city": "Atlantis"})


def test_html_results_become_what_the_model_should_read() -> None:
    assert tool_result("chart", HTMLResponse("<b>hi</b>", inline=False)) == "<b>hi</b>"
    assert (
        tool_result("chart", HTMLResponse("<b>hi</b>", inline=True))
        == "chart: the embedded result is shown to the user."
    )
    context = {"rows": 3}
    assert tool_result("chart", (HTMLResponse("<b>", inline=True), context)) == context
    assert tool_result("api", ("body", {"x": "y"}), "external") == "body"
    assert tool_result("api", ("body", {"x": "y"}), "") == ("body", {"x": "y"})
    assert tool_result("plain", 42) == 42
