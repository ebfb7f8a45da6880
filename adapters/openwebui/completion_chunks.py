"""The Chat Completions chunks a pipe yields into Open WebUI's HTTP stream.

This module owns their shapes: ``CompletionChunks`` makes one answer's
chunks (text, reasoning, usage, tool calls for Open WebUI to run), and
``error_chunk`` / ``busy_error_chunk`` the items Open WebUI shows as the
message's error. How Open WebUI reads each key: docs/open-webui-notes.md,
"How a Function's stream is read" and "Tool calls handed to Open WebUI".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orpipe.engine.json_values import thaw_json

__all__ = ["CompletionChunks", "busy_error_chunk", "error_chunk"]


def error_chunk(message: str) -> dict[str, Any]:
    """A stream item Open WebUI shows as the message's error (no ``choices``)."""
    return {"error": {"message": message}}


def busy_error_chunk(message: str) -> dict[str, Any]:
    """``error_chunk`` for an engine that is too busy: API clients also get a 503-style code."""
    return {"error": {"message": message, "type": "server_busy", "code": 503}}


class CompletionChunks:
    """One answer's ``chat.completion.chunk`` items, in the shape of Open WebUI's own template.

    They share one id (``chatcmpl-<request id>`` once ``name_after`` has
    seen the request), creation time and model. Tool calls are numbered 0,
    1, … in the order the model made them, counted per pipe call, the way
    Open WebUI collects them; ``tool_names`` maps a name announced upstream
    back to Open WebUI's own (its ``__tools__`` key).
    """

    def __init__(
        self, *, model: str, created: int, tool_names: Mapping[str, str] | None = None
    ) -> None:
        self._id: str | None = None
        self._model = model
        self._created = created
        self._tool_names = dict(tool_names or {})
        self._tool_calls = 0

    def name_after(self, request_id: str) -> None:
        """Take the request's id for the chunks' id (the first request seen keeps it)."""
        if self._id is None:
            self._id = f"chatcmpl-{request_id}"

    def delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        """A chunk carrying ``delta`` (``content``, ``reasoning_content``, ``tool_calls``)."""
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": None}])

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """A chunk with no choices and the request's ``usage`` at the top level."""
        return {**self._chunk([]), "usage": usage}

    def tool_call(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """One finished ``function_call`` output item for Open WebUI to run (pass-through mode).

        The whole call goes in one chunk: the engine delivers a call once it is
        complete, and a first entry carrying every field is valid for both the
        middleware and OpenAI-style API clients.
        """
        index = self._tool_calls
        self._tool_calls += 1
        name = str(item.get("name") or "")
        call = {
            "index": index,
            # Without a call id, the item id still pairs call and result; the index
            # fallback is unique within the answer, which is all Open WebUI needs.
            "id": str(item.get("call_id") or item.get("id") or f"call_{index}"),
            "type": "function",
            "function": {
                # Open WebUI looks the tool up by its own name (its __tools__ key).
                "name": self._tool_names.get(name, name),
                "arguments": _arguments_json(item.get("arguments")),
            },
        }
        return self.delta({"tool_calls": [call]})

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id or "chatcmpl-orpipe",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }


def _arguments_json(arguments: Any) -> str:
    """A call's arguments as the JSON string Chat Completions carries.

    Upstream sends a string, passed on unchanged even when it is not JSON:
    Open WebUI then answers the model that the arguments could not be parsed.
    """
    if isinstance(arguments, str):
        return arguments
    if arguments is None:
        return "{}"
    return json.dumps(thaw_json(arguments), ensure_ascii=False, default=str)
