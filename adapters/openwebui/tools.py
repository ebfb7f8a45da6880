"""Open WebUI's tools as engine tools: each call runs on Open WebUI's loop, through the bridge.

``engine_tools`` wraps each declared ``__tools__`` entry in an
``engine.tools.Tool`` whose trio-side function awaits the Open WebUI call on
its own loop (``adapters.bridge.loop_calls.run_on_loop``), so the engine's
timeouts, limits, breakers and cancellation apply to it like to any tool;
direct tool-server entries run in the user's browser through
``__event_call__``. The wrapper treats arguments and results as Open WebUI's
middleware does (docs/open-webui-notes.md, "Tool calls run by the engine"),
and with strict schemas also drops a ``null`` for an argument the original
schema did not require, so the function's own default applies.

Owns nothing long-lived: the wrappers hold the loop, the entry and, for
direct tools, the event caller, for one request.
"""

from __future__ import annotations

import asyncio
import types
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orpipe.adapters.bridge.loop_calls import run_on_loop
from orpipe.engine.tools import Tool

__all__ = ["DeclaredTool", "EventCall", "engine_tools", "tool_result"]

#: Open WebUI's tool types whose results may be ``(result, headers)``.
_EXTERNAL_TYPES = frozenset({"external", "action", "terminal"})

EventCall = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeclaredTool:
    """One ``__tools__`` entry under the name the model sees, with its schema as sent."""

    name: str
    entry: Mapping[str, Any]
    description: str
    parameters: Mapping[str, Any]
    strict: bool


def engine_tools(
    declared: Sequence[DeclaredTool],
    *,
    loop: asyncio.AbstractEventLoop,
    event_call: EventCall | None = None,
    session_id: str | None = None,
) -> Mapping[str, Tool]:
    """Engine tools for the declared entries, keyed by the name the model calls."""
    tools: dict[str, Tool] = {}
    for item in declared:
        call = _OwuiCall(item, loop=loop, event_call=event_call, session_id=session_id)
        tools[item.name] = Tool(
            name=item.name,
            function=call,
            description=item.description,
            parameters=item.parameters,
            strict=item.strict,
            blocking=False,  # awaited in trio; the work itself runs on Open WebUI's loop
        )
    return types.MappingProxyType(tools)


class _OwuiCall:
    """The trio-side function of one Open WebUI tool."""

    def __init__(
        self,
        item: DeclaredTool,
        *,
        loop: asyncio.AbstractEventLoop,
        event_call: EventCall | None,
        session_id: str | None,
    ) -> None:
        self.item = item
        self.loop = loop
        self.event_call = event_call
        self.session_id = session_id
        spec = item.entry.get("spec")
        schema = spec.get("parameters") if isinstance(spec, Mapping) else None
        schema = schema if isinstance(schema, Mapping) else {}
        properties = schema.get("properties")
        required = schema.get("required")
        self.known: frozenset[str] | None = (
            frozenset(properties) if isinstance(properties, Mapping) else frozenset()
        )
        if str(item.entry.get("type", "")) == "mcp":
            self.known = None  # Open WebUI passes MCP arguments through untouched
        self.required = frozenset(required) if isinstance(required, list) else frozenset()

    async def __call__(self, arguments: dict[str, Any]) -> object:
        kwargs = self._arguments(arguments)
        return await run_on_loop(self.loop, lambda: self._on_loop(kwargs))

    def _arguments(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        kept = {}
        for key, value in arguments.items():
            if self.known is not None and key not in self.known:
                continue  # Open WebUI drops what the schema does not name
            if value is None and key not in self.required:
                continue  # strict mode's null for "left out": let the default apply
            kept[key] = value
        return kept

    async def _on_loop(self, kwargs: dict[str, Any]) -> object:
        entry = self.item.entry
        if entry.get("direct"):
            if self.event_call is None:
                raise RuntimeError(
                    "this tool runs in the user's browser, but the request has no "
                    "__event_call__ to reach it"
                )
            result = await self.event_call(
                {
                    "type": "execute:tool",
                    "data": {
                        "id": str(uuid.uuid4()),
                        "name": self.item.name,
                        "params": kwargs,
                        "server": entry.get("server", {}),
                        "session_id": self.session_id,
                    },
                }
            )
        else:
            function = entry.get("callable")
            if not callable(function):
                raise RuntimeError("Open WebUI gave this tool no callable")
            result = function(**kwargs)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        return tool_result(self.item.name, result, str(entry.get("type", "")))


def tool_result(name: str, result: object, tool_type: str = "") -> object:
    """What the model should read of a tool's return value (see the module docstring)."""
    context: object = None
    if isinstance(result, tuple) and len(result) == 2 and _is_html_response(result[0]):
        result, context = result
    if _is_html_response(result):
        headers = getattr(result, "headers", {}) or {}
        body = getattr(result, "body", b"")
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        if "inline" not in str(headers.get("content-disposition", "")):
            return text
        if isinstance(context, str | dict | list):
            return context
        return f"{name}: the embedded result is shown to the user."
    if tool_type in _EXTERNAL_TYPES and isinstance(result, tuple) and len(result) == 2:
        return result[0]
    return result


def _is_html_response(value: object) -> bool:
    # Duck-typed: starlette is Open WebUI's dependency, not ours.
    return type(value).__name__ == "HTMLResponse" and hasattr(value, "body")
