"""The body's messages → Responses input items, with stored artifacts replayed in place.

Each role has its mapper: ``system`` / ``developer`` messages stay items with
their own role (not folded into the next user message's text, as the
original pipe did); user content goes part by part (``request.parts``);
assistant text loses Open WebUI's rendered blocks (``request.text``); tool
calls and results are history only in pass-through mode
(``request.passthrough_tools``).

Stored artifacts (earlier turns' reasoning and tool items) are replayed when
the caller passes a ``ReplayPlan``: markers in assistant text are replaced in
place by their items, a cancelled turn's orphans go before the newest user
turn, and calls and outputs are paired by ``call_id`` (rules in
``adapters.openwebui.artifact_replay``). Marker lines never reach the model,
with or without a plan. Assistant ids are derived from position and text, so
the same history always maps to the same input (provider prompt caches key
on it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.artifact_replay import (
    ReplayPlan,
    ReplayReport,
    orphan_items,
    pair_function_calls,
    replay_items,
    split_at_markers,
    turn_indices,
)
from orpipe.adapters.openwebui.request.parts import user_parts
from orpipe.adapters.openwebui.request.passthrough_tools import tool_call_items, tool_result
from orpipe.adapters.openwebui.request.tally import (
    JsonDict,
    RequestMappingError,
    Tally,
    expect_mapping,
    skip_notes,
)
from orpipe.adapters.openwebui.request.text import flatten_text, strip_rendered_blocks

__all__ = ["Replay", "assistant_id", "map_messages"]

#: Assistant fields of Chat Completions tool calling / reasoning; replay uses stored artifacts.
_ASSISTANT_EXTRAS: Final = ("tool_calls", "function_call", "reasoning_content", "reasoning_details")

RoleMapper = Callable[[int, Mapping[str, Any], ModelInfo, Tally], JsonDict | None]


@dataclass(frozen=True, slots=True)
class Replay:
    """One request's replay: the caller's plan, whether reasoning goes, and the report."""

    plan: ReplayPlan
    keep_reasoning: bool
    report: ReplayReport

    @classmethod
    def of(cls, plan: ReplayPlan | None, model: ModelInfo, report: ReplayReport) -> Replay | None:
        # Reasoning items only for models that take reasoning: see artifact_replay.
        return None if plan is None else cls(plan, model.reasoning, report)


def map_messages(
    messages: Any, model: ModelInfo, tally: Tally, replay: Replay | None
) -> list[JsonDict]:
    """The history as input items, in order; raises when there is nothing to send."""
    if messages is None:
        raise RequestMappingError("the body has no messages", "Send at least one user message.")
    if not isinstance(messages, list | tuple):
        raise RequestMappingError(
            f"messages is a {type(messages).__name__}, not a list",
            "Send the conversation as a list of messages.",
        )
    if not messages:
        raise RequestMappingError("the message list is empty", "Send at least one user message.")
    items: list[JsonDict] = []
    turns = turn_indices(messages)
    newest_turn_at: int | None = None  # where the newest user turn starts in ``items``
    for index, raw in enumerate(messages):
        message = expect_mapping(
            raw, f"messages[{index}]", "Each message needs a role and content."
        )
        role = message.get("role")
        mapper = _ROLE_MAPPERS.get(role) if isinstance(role, str) else None
        if mapper is None:
            raise RequestMappingError(
                f"messages[{index}] has role {role!r}",
                f"Each message needs one of the roles {', '.join(_ROLE_MAPPERS)}.",
            )
        if role == "user" and turns[index] == turns[-1] and newest_turn_at is None:
            newest_turn_at = len(items)
        if role == "assistant" and replay is not None:
            turns_ago = turns[-1] - turns[index]
            items.extend(_replayed_assistant(index, message, tally, replay, turns_ago))
            items.extend(tool_call_items(index, message, tally))
            continue
        item = mapper(index, message, model, tally)
        if item is not None:
            items.append(item)
        if role == "assistant":
            items.extend(tool_call_items(index, message, tally))
    if replay is not None:
        items = _with_orphans(items, newest_turn_at, replay)
    if not items:
        skipped = f" ({' '.join(skip_notes(model, tally))})" if tally.skipped else ""
        raise RequestMappingError(
            f"no message has anything this model can read{skipped}",
            "Write a message in text, or pick a model that accepts the attachments.",
        )
    return items


def _instruction_item(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: Tally
) -> JsonDict | None:
    """A system or developer message stays a message with its role (not user text)."""
    text = flatten_text(message.get("content"), f"messages[{index}]")
    if not text.strip():
        return None
    return {
        "type": "message",
        "role": message["role"],
        "content": [{"type": "input_text", "text": text}],
    }


def _user_item(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: Tally
) -> JsonDict | None:
    where = f"messages[{index}]"
    content = message.get("content")
    if content is None:
        parts: list[JsonDict] = []
    elif isinstance(content, str):
        parts = [{"type": "input_text", "text": content}] if content else []
    elif isinstance(content, list | tuple):
        parts = user_parts(content, where, model, tally)
    else:
        raise RequestMappingError(
            f"{where} (user) has content of type {type(content).__name__}",
            "User content must be text or a list of content parts.",
        )
    if not parts:
        return None
    return {"type": "message", "role": "user", "content": parts}


def _assistant_item(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: Tally
) -> JsonDict | None:
    """An assistant message without replay: its text only, marker lines removed."""
    segments = split_at_markers(_assistant_text(index, message, tally))
    text = "\n\n".join(piece for piece in segments if isinstance(piece, str))
    return _assistant_message(index, text, 0) if text else None


def _replayed_assistant(
    index: int, message: Mapping[str, Any], tally: Tally, replay: Replay, turns_ago: int
) -> list[JsonDict]:
    """An assistant message with each marker replaced by its stored item."""
    return replay_items(
        _assistant_text(index, message, tally),
        replay.plan,
        replay.report,
        text_item=lambda text, ordinal: _assistant_message(index, text, ordinal),
        turns_ago=turns_ago,
        keep_reasoning=replay.keep_reasoning,
    )


def _with_orphans(
    items: list[JsonDict], newest_turn_at: int | None, replay: Replay
) -> list[JsonDict]:
    """``items`` with the orphans before the newest user turn, then paired by call_id."""
    at = len(items) if newest_turn_at is None else newest_turn_at
    orphans = orphan_items(replay.plan, replay.report, keep_reasoning=replay.keep_reasoning)
    return pair_function_calls([*items[:at], *orphans, *items[at:]], replay.report.warnings)


def _assistant_text(index: int, message: Mapping[str, Any], tally: Tally) -> str:
    where = f"messages[{index}]"
    for key in _ASSISTANT_EXTRAS:
        if message.get(key) and not (key == "tool_calls" and tally.keep_tool_calls):
            tally.dropped.append(f"{where}.{key}")
    # The model must not read its own rendered thinking back as answer text.
    return strip_rendered_blocks(flatten_text(message.get("content"), where))


def _assistant_message(index: int, text: str, ordinal: int) -> JsonDict:
    # The first segment keeps the id a marker-free message gets, so adding replay
    # does not change the id of text the model has seen before.
    key = text if ordinal == 0 else f"{ordinal}\n{text}"
    return {
        "type": "message",
        "role": "assistant",
        # OpenRouter requires id and status on assistant history (contract §4.8).
        "id": assistant_id(index, key),
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


_ROLE_MAPPERS: Final[dict[str, RoleMapper]] = {
    "system": _instruction_item,
    "developer": _instruction_item,
    "user": _user_item,
    "assistant": _assistant_item,
    "tool": tool_result,
    "function": tool_result,
}


def assistant_id(index: int, text: str) -> str:
    """A stable id: the same turn at the same position gets the same id every time.

    Stability keeps each request's prefix identical to the last one's, which is
    what provider prompt caches key on.
    """
    digest = hashlib.sha256(f"{index}\n{text}".encode("utf-8", "surrogatepass"))
    return f"msg_{digest.hexdigest()[:24]}"
