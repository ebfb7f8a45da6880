"""``engine.tools``: how a tool says what it is, and how a request announces its tools."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from engine.errors import UsageError
from engine.messages import ChatRequest
from engine.tools import Tool, toolbox


async def async_fn(args: dict[str, Any]) -> str:
    return "a"


def sync_fn(args: dict[str, Any]) -> str:
    return "s"


class AsyncCallable:
    async def __call__(self, args: dict[str, Any]) -> str:
        return "c"


@pytest.mark.parametrize(
    ("function", "in_thread"),
    [
        (async_fn, False),
        (sync_fn, True),
        (functools.partial(async_fn), False),
        (functools.partial(functools.partial(sync_fn)), True),
        (AsyncCallable(), False),
    ],
)
def test_blocking_or_not_is_worked_out(function: Any, in_thread: bool) -> None:
    assert Tool(name="t", function=function).runs_in_thread is in_thread


def test_blocking_can_be_said_explicitly() -> None:
    assert Tool(name="t", function=async_fn, blocking=True).runs_in_thread
    assert not Tool(name="t", function=sync_fn, blocking=False).runs_in_thread


@pytest.mark.parametrize("bad", [{"name": ""}, {"function": 3}])
def test_a_tool_needs_a_name_and_a_function(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Tool(**{"name": "t", "function": sync_fn, **bad})


def test_spec_announces_a_function_tool() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    tool = Tool(name="search", function=sync_fn, description="Find", parameters=schema, strict=True)
    assert tool.spec() == {
        "type": "function",
        "name": "search",
        "parameters": schema,
        "description": "Find",
        "strict": True,
    }
    schema["properties"] = {}  # the tool froze its own copy
    assert tool.spec()["parameters"]["properties"] == {"q": {"type": "string"}}  # type: ignore[index]
    assert Tool(name="quiet", function=sync_fn).spec() is None


def test_toolbox_refuses_two_tools_with_one_name_and_is_read_only() -> None:
    with pytest.raises(UsageError, match="two tools are named 'x'"):
        toolbox(Tool(name="x", function=sync_fn), Tool(name="x", function=async_fn))
    box = toolbox(Tool(name="x", function=sync_fn))
    with pytest.raises(TypeError):
        box["y"] = Tool(name="y", function=sync_fn)  # type: ignore[index]


def test_a_request_refuses_a_tool_filed_under_another_name() -> None:
    with pytest.raises(UsageError, match="filed under the name 'y'"):
        ChatRequest(model="m", input=(), tools={"y": Tool(name="x", function=sync_fn)})


def test_the_body_announces_tools_after_the_callers_own_and_appends_more_input() -> None:
    mcp = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com"}
    request = ChatRequest(
        model="m",
        input=({"role": "user", "content": "hi"},),
        options={"tools": [mcp]},
        tools=toolbox(
            Tool(name="a", function=sync_fn, parameters={"type": "object"}),
            Tool(name="hidden", function=sync_fn),
        ),
    )
    more = ({"type": "function_call_output", "call_id": "c", "output": "x"},)
    body = request.body(more)
    assert body["tools"] == [
        mcp,
        {"type": "function", "name": "a", "parameters": {"type": "object"}},
    ]
    assert body["input"] == [{"role": "user", "content": "hi"}, dict(more[0])]
    assert request.body()["input"] == [{"role": "user", "content": "hi"}]  # unchanged
