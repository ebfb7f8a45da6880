"""``engine.tools``: how a tool says what it is, and how a request announces its tools."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import pytest

from orpipe.engine.errors import UsageError
from orpipe.engine.messages import ChatRequest
from orpipe.engine.tools import Tool, toolbox


async def async_fn(args: dict[str, Any]) -> str:
    return "a"


def sync_fn(args: dict[str, Any]) -> str:
    return "s"


class AsyncCallable:
    async def __call__(self, args: dict[str, Any]) -> str:
        return "c"


class SyncCallable:
    def __call__(self, args: dict[str, Any]) -> str:
        return "c"


class Methods:
    async def fetch(self, args: dict[str, Any]) -> str:
        return "m"

    def compute(self, args: dict[str, Any]) -> str:
        return "m"


@pytest.mark.parametrize(
    ("function", "in_thread"),
    [
        (async_fn, False),
        (sync_fn, True),
        (lambda args: args, True),
        (functools.partial(async_fn), False),
        (functools.partial(functools.partial(async_fn)), False),
        (functools.partial(sync_fn), True),
        (functools.partial(functools.partial(sync_fn)), True),
        (AsyncCallable(), False),
        (functools.partial(AsyncCallable()), False),
        (SyncCallable(), True),
        (Methods().fetch, False),
        (Methods().compute, True),
        (print, True),
    ],
)
def test_blocking_or_not_is_worked_out(function: Any, in_thread: bool) -> None:
    tool = Tool(name="t", function=function)
    assert tool.runs_in_thread is in_thread
    assert tool.blocking is None  # what the caller said stays as it was


@pytest.mark.parametrize("function", [async_fn, sync_fn, AsyncCallable(), SyncCallable()])
@pytest.mark.parametrize("blocking", [True, False])
def test_blocking_said_explicitly_wins(function: Any, blocking: bool) -> None:
    assert Tool(name="t", function=function, blocking=blocking).runs_in_thread is blocking


def test_runs_in_thread_cannot_be_given() -> None:
    with pytest.raises(TypeError):
        Tool(name="t", function=sync_fn, runs_in_thread=False)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "bad",
    [
        {"name": ""},
        {"name": None},
        {"name": 3},
        {"function": 3},
        {"function": None},
        {"function": "sync_fn"},
    ],
)
def test_a_tool_needs_a_name_and_a_function(bad: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Tool(**{"name": "t", "function": sync_fn, **bad})


def test_the_error_names_the_tool_with_a_bad_function() -> None:
    with pytest.raises(UsageError, match="tool 'lookup': function must be callable"):
        Tool(name="lookup", function=42)  # type: ignore[arg-type]


def test_a_tool_is_frozen() -> None:
    tool = Tool(name="t", function=sync_fn)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tool.name = "other"  # type: ignore[misc]


def test_the_defaults() -> None:
    tool = Tool(name="t", function=sync_fn)
    assert tool.description == ""
    assert tool.parameters is None
    assert not tool.strict
    assert not tool.retry_safe


def test_parameters_are_frozen_as_a_copy() -> None:
    schema: dict[str, Any] = {"type": "object", "required": ["q"], "properties": {"q": {}}}
    tool = Tool(name="t", function=sync_fn, parameters=schema)
    assert tool.parameters is not None
    with pytest.raises(TypeError):
        tool.parameters["type"] = "array"  # type: ignore[index]
    with pytest.raises(TypeError):
        tool.parameters["properties"]["q"] = {"type": "string"}
    assert tool.parameters["required"] == ("q",)
    schema["required"].append("r")
    schema["type"] = "array"
    assert tool.parameters["type"] == "object"
    assert tool.parameters["required"] == ("q",)


def test_spec_announces_a_function_tool() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tool = Tool(name="search", function=sync_fn, description="Find", parameters=schema, strict=True)
    assert tool.spec() == {
        "type": "function",
        "name": "search",
        "parameters": schema,
        "description": "Find",
        "strict": True,
    }
    schema["properties"] = {}  # the tool froze its own copy
    spec = tool.spec()
    assert spec is not None
    assert spec["parameters"]["properties"] == {"q": {"type": "string"}}
    assert type(spec["parameters"]) is dict
    assert type(spec["parameters"]["required"]) is list  # thawed: ready to encode


def test_spec_leaves_out_an_empty_description_and_strict_false() -> None:
    tool = Tool(name="search", function=sync_fn, parameters={"type": "object"})
    assert tool.spec() == {"type": "function", "name": "search", "parameters": {"type": "object"}}


def test_spec_with_a_description_but_not_strict() -> None:
    tool = Tool(name="s", function=sync_fn, description="d", parameters={"type": "object"})
    spec = tool.spec()
    assert spec is not None
    assert spec["description"] == "d"
    assert "strict" not in spec


def test_empty_parameters_are_still_announced() -> None:
    assert Tool(name="t", function=sync_fn, parameters={}).spec() == {
        "type": "function",
        "name": "t",
        "parameters": {},
    }


def test_a_tool_without_parameters_is_not_announced() -> None:
    assert Tool(name="quiet", function=sync_fn, description="d", strict=True).spec() is None


def test_each_spec_is_a_fresh_copy() -> None:
    tool = Tool(name="t", function=sync_fn, parameters={"type": "object", "properties": {}})
    first = tool.spec()
    assert first is not None
    first["parameters"]["properties"]["x"] = {}
    first["name"] = "changed"
    assert tool.spec() == {
        "type": "function",
        "name": "t",
        "parameters": {"type": "object", "properties": {}},
    }


# -- toolbox -------------------------------------------------------------------------


def test_toolbox_maps_names_to_tools_in_order() -> None:
    a, b = Tool(name="a", function=sync_fn), Tool(name="b", function=async_fn)
    box = toolbox(b, a)
    assert list(box) == ["b", "a"]
    assert box["a"] is a
    assert box["b"] is b
    assert dict(toolbox()) == {}


def test_toolbox_refuses_two_tools_with_one_name() -> None:
    with pytest.raises(UsageError, match="two tools are named 'x'"):
        toolbox(
            Tool(name="y", function=sync_fn),
            Tool(name="x", function=sync_fn),
            Tool(name="x", function=async_fn),
        )


def test_toolbox_is_read_only() -> None:
    box = toolbox(Tool(name="x", function=sync_fn))
    with pytest.raises(TypeError):
        box["y"] = Tool(name="y", function=sync_fn)  # type: ignore[index]
    with pytest.raises(TypeError):
        del box["x"]  # type: ignore[attr-defined]
    assert list(box) == ["x"]


# -- the request ---------------------------------------------------------------------------


def test_a_request_refuses_a_tool_filed_under_another_name() -> None:
    with pytest.raises(UsageError, match="tool 'x' is filed under the name 'y'"):
        ChatRequest(model="m", input=(), tools={"y": Tool(name="x", function=sync_fn)})


def test_a_request_keeps_a_read_only_copy_of_its_tools() -> None:
    tool = Tool(name="x", function=sync_fn)
    tools = {"x": tool}
    request = ChatRequest(model="m", input=(), tools=tools)
    tools["z"] = Tool(name="z", function=sync_fn)
    assert request.tools is not None
    assert list(request.tools) == ["x"]
    assert request.tools["x"] is tool
    with pytest.raises(TypeError):
        request.tools["z"] = tool  # type: ignore[index]


def test_a_request_without_tools_has_none() -> None:
    assert ChatRequest(model="m", input=()).tools is None
    assert "tools" not in ChatRequest(model="m", input=()).body()


MCP = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com"}
USER = {"role": "user", "content": "hi"}


def test_the_body_announces_tools_after_the_callers_own_and_appends_more_input() -> None:
    request = ChatRequest(
        model="m",
        input=(USER,),
        options={"tools": [MCP]},
        tools=toolbox(
            Tool(name="a", function=sync_fn, parameters={"type": "object"}),
            Tool(name="hidden", function=sync_fn),
            Tool(name="b", function=async_fn, description="B", parameters={"type": "object"}),
        ),
    )
    more = ({"type": "function_call_output", "call_id": "c", "output": "x"},)
    body = request.body(more)
    assert body["tools"] == [
        MCP,
        {"type": "function", "name": "a", "parameters": {"type": "object"}},
        {"type": "function", "name": "b", "parameters": {"type": "object"}, "description": "B"},
    ]
    assert body["input"] == [USER, dict(more[0])]
    assert body["stream"] is True
    assert body["model"] == "m"


def test_the_body_announces_tools_without_caller_tools() -> None:
    request = ChatRequest(
        model="m",
        input=(USER,),
        tools=toolbox(Tool(name="a", function=sync_fn, parameters={"type": "object"})),
    )
    assert request.body()["tools"] == [
        {"type": "function", "name": "a", "parameters": {"type": "object"}}
    ]


def test_tools_without_parameters_add_no_tools_field() -> None:
    request = ChatRequest(
        model="m", input=(USER,), tools=toolbox(Tool(name="hidden", function=sync_fn))
    )
    assert "tools" not in request.body()
    empty = ChatRequest(model="m", input=(USER,), tools=toolbox())
    assert "tools" not in empty.body()


def test_tools_without_parameters_leave_the_callers_tools_as_they_are() -> None:
    request = ChatRequest(
        model="m",
        input=(USER,),
        options={"tools": [MCP]},
        tools=toolbox(Tool(name="hidden", function=sync_fn)),
    )
    assert request.body()["tools"] == [MCP]


def test_more_input_comes_after_input_in_its_own_order() -> None:
    request = ChatRequest(model="m", input=(USER, {"role": "assistant", "content": "yo"}))
    more = (
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "x"},
    )
    body = request.body(more)
    assert [item.get("role") or item["type"] for item in body["input"]] == [
        "user",
        "assistant",
        "function_call",
        "function_call_output",
    ]


def test_building_a_body_changes_neither_the_request_nor_the_next_body() -> None:
    request = ChatRequest(
        model="m",
        input=(USER,),
        options={"tools": [MCP]},
        tools=toolbox(Tool(name="a", function=sync_fn, parameters={"type": "object"})),
    )
    more = ({"type": "function_call_output", "call_id": "c", "output": "x"},)
    before = request.body()

    body = request.body(more)
    body["tools"].append({"type": "web_search"})
    body["tools"][0]["server_label"] = "changed"
    body["tools"][1]["parameters"]["type"] = "array"
    body["input"].append({"role": "user", "content": "more"})
    body["input"][0]["content"] = "changed"

    assert request.body() == before
    assert before["input"] == [USER]
    assert len(before["tools"]) == 2
    assert request.options["tools"] == (MCP,)
    assert request.input == (USER,)
    assert more == ({"type": "function_call_output", "call_id": "c", "output": "x"},)
