"""Tools a request lets the model call: the engine's ``ToolRunner`` port.

A ``Tool`` names one function the model may call and how to run it. The
engine's tool executor (``actors.tool_executor``) calls ``function`` with
the model's arguments as one ``dict``:

* an ``async def`` function is awaited in trio (an adapter whose tools live
  on another event loop wraps them: ``adapters.openwebui.tools`` runs Open
  WebUI's asyncio tools through the bridge);
* any other callable is *blocking* and runs in a worker thread behind the
  executor's thread limiter. A thread cannot be cancelled: one that is still
  running when its call times out is counted as a runaway until it returns.

Whatever the function returns becomes the ``function_call_output`` text
(strings as they are, JSON-able values as JSON, anything else by ``str``);
whatever it raises becomes a failed output the model can read. A call is
never retried unless the tool says it is safe to (``retry_safe``): a tool
may not be idempotent.

``ChatRequest.tools`` maps names to tools (``toolbox`` builds that mapping
and refuses duplicate names). Each tool with ``parameters`` is also sent
upstream as a Responses ``function`` tool (``Tool.spec``).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orpipe.engine.errors import UsageError
from orpipe.engine.json_values import JsonObject, freeze_json, thaw_json

__all__ = ["Tool", "ToolFunction", "toolbox"]

#: ``async def f(arguments) -> object``, or a plain (blocking) ``def``.
ToolFunction = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """One function the model may call.

    ``blocking`` is worked out from ``function`` when not given: coroutine
    functions (also behind ``functools.partial``) are awaited, the rest run
    in threads.
    """

    name: str
    function: ToolFunction
    description: str = ""
    #: JSON schema of the arguments object; None = the tool is not announced
    #: upstream by the engine (the caller put it in ``options["tools"]``).
    parameters: JsonObject | None = None
    #: Announce with ``strict: true`` (the schema must then be strict already).
    strict: bool = False
    #: The call may run twice without harm, so one failure is retried once.
    retry_safe: bool = False
    blocking: bool | None = None
    #: Resolved form of ``blocking``; set in ``__post_init__``.
    runs_in_thread: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise UsageError(f"a tool needs a non-empty name, not {self.name!r}")
        if not callable(self.function):
            raise UsageError(f"tool {self.name!r}: function must be callable")
        blocking = self.blocking
        if blocking is None:
            blocking = not _is_async(self.function)
        object.__setattr__(self, "runs_in_thread", blocking)
        if self.parameters is not None:
            object.__setattr__(self, "parameters", freeze_json(self.parameters))

    def spec(self) -> dict[str, Any] | None:
        """The Responses ``function`` tool announcing this tool; None without parameters."""
        if self.parameters is None:
            return None
        spec: dict[str, Any] = {
            "type": "function",
            "name": self.name,
            "parameters": thaw_json(self.parameters),
        }
        if self.description:
            spec["description"] = self.description
        if self.strict:
            spec["strict"] = True
        return spec


def _is_async(function: Callable[..., Any]) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - an object with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def toolbox(*tools: Tool) -> Mapping[str, Tool]:
    """A read-only name → tool mapping; two tools with one name are a ``UsageError``."""
    box: dict[str, Tool] = {}
    for tool in tools:
        if tool.name in box:
            raise UsageError(f"two tools are named {tool.name!r}; tool names must be unique")
        box[tool.name] = tool
    return types.MappingProxyType(box)
