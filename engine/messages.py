"""Typed messages: the public request, a request's turn mailbox, and the outbound events.

All are frozen, slotted, keyword-only dataclasses. Containers inside them are
tuples or read-only mappings (``freeze_json``), so a message can be shared by
several actors without anyone changing it underneath another. One exception,
for the hot path: a decoded upstream event's payload (``UpstreamEvent.data``,
``OutputItem.item``) is the decoder's own dict, typed read-only (``Mapping``)
and never mutated, instead of being deep-copied for every event.

The pipeline's own messages, which travel the shared channels, are in
``engine.pipeline_messages``.
"""

from __future__ import annotations

import secrets
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orpipe.engine.errors import EngineError, UsageError
from orpipe.engine.json_values import JsonObject, freeze_json, thaw_json
from orpipe.engine.logs import LEVELS

if TYPE_CHECKING:  # engine.artifacts and engine.tools import engine.json_values, not this module
    from orpipe.engine.artifacts import ArtifactContext
    from orpipe.engine.tools import Tool

__all__ = [
    "Cancelled",
    "ChatRequest",
    "Citation",
    "Completed",
    "Ending",
    "Failed",
    "Incomplete",
    "JsonObject",
    "NextTurn",
    "Notice",
    "OutboundBatch",
    "OutboundEvent",
    "OutputItem",
    "ReasoningDelta",
    "Status",
    "TextDelta",
    "ToolsStopped",
    "TurnMail",
    "Usage",
    "freeze_json",
    "new_request_id",
    "thaw_json",
]


def new_request_id() -> str:
    """16 hex characters: unique enough per process, short enough for logs."""
    return secrets.token_hex(8)


# --------------------------------------------------------------------------
# The public request
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """One chat turn to run against the Responses API.

    ``input`` holds Responses input items (contract §1.3); ``options`` holds
    any other request-body fields (``max_output_tokens``, ``reasoning``,
    ``tools``, ``metadata``, ...). Both are frozen on construction.
    """

    model: str
    input: tuple[JsonObject, ...]
    instructions: str | None = None
    options: JsonObject = field(default_factory=lambda: types.MappingProxyType({}))
    request_id: str = field(default_factory=new_request_id)
    user_id: str | None = None
    #: This request's text batching, overriding the engine's ``update_char_limit``
    #: and ``idle_flush_ms`` (a user's streaming profile in Open WebUI).
    update_char_limit: int | None = None
    idle_flush_ms: float | None = None
    #: Where this request's artifacts are stored; None = they are not stored.
    artifacts: ArtifactContext | None = None
    #: Functions the engine runs when the model calls them (``engine.tools``);
    #: None = function calls are only reported (``OutputItem``), not run.
    tools: Mapping[str, Tool] | None = None
    #: This request's log level (a user's LOG_LEVEL), for its records only; None = the
    #: process's level (``engine.logs``).
    log_level: str | None = None

    def __post_init__(self) -> None:
        if self.log_level is not None:
            if self.log_level.upper() not in LEVELS:
                raise UsageError(
                    f"log_level must be one of {', '.join(LEVELS)}, not {self.log_level!r}"
                )
            object.__setattr__(self, "log_level", self.log_level.upper())
        if self.update_char_limit is not None and not 1 <= self.update_char_limit <= 100_000:
            raise UsageError(
                f"update_char_limit must be from 1 to 100000, not {self.update_char_limit}"
            )
        if self.idle_flush_ms is not None and not 0 <= self.idle_flush_ms <= 60_000:
            raise UsageError(f"idle_flush_ms must be from 0 to 60000, not {self.idle_flush_ms}")
        # Frozen dataclass: assignment goes through object.__setattr__ once, here.
        object.__setattr__(self, "input", freeze_json(self.input))
        object.__setattr__(self, "options", freeze_json(self.options))
        if self.tools is not None:
            for name, tool in self.tools.items():
                if name != tool.name:
                    raise UsageError(f"tool {tool.name!r} is filed under the name {name!r}")
            object.__setattr__(self, "tools", types.MappingProxyType(dict(self.tools)))
        reserved = {"model", "input", "instructions", "stream", "store"} & set(self.options)
        if reserved:
            raise UsageError(
                f"options may not set {sorted(reserved)}; use the ChatRequest fields instead"
            )

    def body(self, more_input: tuple[JsonObject, ...] = ()) -> dict[str, Any]:
        """The JSON body for ``POST /responses`` (always streaming, never stored).

        ``more_input`` is what earlier turns of a tool loop added (the model's
        output items and the tool outputs), sent after ``input``. Tools with
        parameters are announced after any tools given in ``options``.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "input": thaw_json(self.input) + thaw_json(more_input),
            "stream": True,
        }
        if self.instructions is not None:
            body["instructions"] = self.instructions
        # OpenRouter rejects explicit nulls for optional fields (contract §1.2).
        body.update({k: thaw_json(v) for k, v in self.options.items() if v is not None})
        if self.tools:
            specs = [spec for tool in self.tools.values() if (spec := tool.spec()) is not None]
            if specs:
                body["tools"] = list(body.get("tools", [])) + specs
        return body


# --------------------------------------------------------------------------
# A request's turn mailbox (tool executor → the request's fetch task)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NextTurn:
    """tool executor → fetcher (the request's turn mailbox): stream turn ``turn`` next.

    ``more_input`` is appended to what the previous turns added.
    """

    request_id: str
    turn: int
    more_input: tuple[JsonObject, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolsStopped:
    """tool executor → fetcher: the request was cancelled, or ran out of time, in a tool round.

    The fetcher turns it into the request's ``StreamEnded``, so the ending
    still travels the pipeline and reaches the consumer after every event.
    """

    request_id: str
    cancel_reason: str | None = None
    failure: EngineError | None = None


TurnMail = NextTurn | ToolsStopped


# --------------------------------------------------------------------------
# Outbound events (what a consumer of one request receives)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TextDelta:
    """More of the visible answer."""

    request_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta:
    """More of the model's reasoning (summary or raw reasoning text)."""

    request_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Citation:
    """A ``url_citation`` annotation; each URL is reported once per request."""

    request_id: str
    url: str
    title: str
    start_index: int | None = None
    end_index: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """A progress line (e.g. "Searching the web…"); ``done`` closes it."""

    request_id: str
    description: str
    done: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice:
    """A warning a user should see, without ending the request."""

    request_id: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputItem:
    """A finished non-message output item (reasoning, function_call, ...).

    ``artifact_id`` is set when the item was handed to the persister: the
    consumer writes its reference into the answer (``engine.artifacts``).
    """

    request_id: str
    item: JsonObject
    artifact_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token counts and cost from the terminal event."""

    request_id: str
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Completed:
    """The response finished normally."""

    request_id: str
    response_id: str | None
    text_chars: int
    #: Artifacts of this answer (``OutputItem.artifact_id``) that were not
    #: written to the store when the ending went out (engine.durable_wait):
    #: another worker may not find them, so leave their references out.
    unwritten_artifact_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Incomplete:
    """The response finished early (e.g. the output token limit); text is partial."""

    request_id: str
    reason: str
    message: str
    #: As ``Completed.unwritten_artifact_ids``.
    unwritten_artifact_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed:
    """The request failed; ``message`` is written for the person who asked."""

    request_id: str
    error: EngineError
    message: str
    #: As ``Completed.unwritten_artifact_ids``.
    unwritten_artifact_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """The request was cancelled (consumer stopped, or an explicit cancel)."""

    request_id: str
    reason: str
    #: As ``Completed.unwritten_artifact_ids``.
    unwritten_artifact_ids: tuple[str, ...] = ()


Ending = Completed | Incomplete | Failed | Cancelled
OutboundEvent = (
    TextDelta | ReasoningDelta | Citation | Status | Notice | OutputItem | Usage | Ending
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundBatch:
    """Events for one consumer, and the upstream events they account for.

    The consumer returns ``credits`` to the request's flow window when it
    takes the batch; that is what lets the fetcher read on.
    """

    events: tuple[OutboundEvent, ...]
    credits: int
