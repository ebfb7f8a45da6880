"""Open WebUI's chat ``body`` → one engine ``ChatRequest`` for OpenRouter's Responses API.

This module owns the translation of the Chat Completions-shaped body Open WebUI
hands a pipe (contract §2.6) into a Responses request (contract §1.2-1.6, §4):
history messages become ``input`` items, the few sampling parameters the
Responses API shares are carried over, and everything else is dropped and
named, so a debug log can say what did not go upstream.

It is pure and synchronous: no I/O, no clock, no randomness beyond the request
id ``ChatRequest`` makes when none is given. The same body always maps to the
same request, which is what keeps assistant history ids stable for caching.

Deliberate departures from the original pipe (seed inventory §B.3-B.4):

* ``system`` / ``developer`` messages stay items with their own role; they are
  not folded into the next user message's text.
* A ``max_tokens`` the user set is always honoured (as ``max_output_tokens``).
* ``response_format`` becomes ``text.format``, the Responses name for it.
* OpenRouter's web plugin is attached on the chat's toggle or an admin's force
  list only, never merely because a model is priced for web search.

Stored artifacts (earlier turns' reasoning and tool items) are replayed when the
caller passes a ``ReplayPlan``: markers in assistant text are replaced in place
by their items, a cancelled turn's orphans go before the newest user turn, and
calls and outputs are paired by ``call_id`` (rules in ``adapters.openwebui.artifact_replay``).
Marker lines never reach the model, with or without a plan.

Tools: in engine mode the engine runs them, replays their calls and outputs
from storage, and Open WebUI's tool messages are not history. In pass-through
mode (``owui_tool_calls``, TOOL_EXECUTION_MODE open-webui) Open WebUI runs them
and they are: 0.12.4 (``utils/middleware.py`` tool loop, history rebuilt by
``utils/misc.py`` ``convert_output_to_messages``) sends an assistant message
whose ``tool_calls`` are ``{id, type: "function", function: {name, arguments}}``
and, after it, one ``{role: "tool", tool_call_id, content}`` per call, content
already flattened to a string. Each call becomes a ``function_call`` item after
the assistant's text, each result a ``function_call_output``; a call or result
without its partner is left out with a warning, because OpenRouter rejects
unpaired items. The body's ``tools`` (Chat Completions form, what Open WebUI
would announce to any model) become Responses ``function`` tools through
``adapters.openwebui.tool_specs.declare_tools``, only for a model that takes tools.

Attachments: each content part type has its own small function here, which
does what needs no I/O (modality, inline size before decoding, formats);
``adapters.openwebui.intake`` then reads Open WebUI's stored files, downloads or vets
links, and keeps copies, on Open WebUI's loop.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from orpipe.adapters.openwebui.artifact_replay import (
    ReplayPlan,
    ReplayReport,
    orphan_items,
    pair_function_calls,
    replay_items,
    split_at_markers,
    turn_indices,
)
from orpipe.adapters.openwebui.data_urls import AttachmentError, check_base64, check_data_url
from orpipe.adapters.openwebui.image_selection import ImageSelection, select_images
from orpipe.adapters.openwebui.models import ModelInfo
from orpipe.adapters.openwebui.tool_specs import ToolDeclarations, declare_tools, function_spec
from orpipe.engine.errors import EngineError
from orpipe.engine.messages import ChatRequest, new_request_id

__all__ = [
    "MappedRequest",
    "ReplayPlan",
    "RequestMappingError",
    "RequestSettings",
    "build_request",
    "strip_rendered_blocks",
]

JsonDict = dict[str, Any]

#: Reasoning efforts OpenRouter accepts (contract §1.5).
REASONING_EFFORTS: Final = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
#: ``input_image.detail`` values (contract §1.3); anything else becomes "auto".
_IMAGE_DETAILS: Final = frozenset({"auto", "low", "high", "original"})
#: ``input_file`` fields passed through; at least one of ``_FILE_SOURCES`` must be present.
_FILE_FIELDS: Final = ("file_id", "file_data", "file_url", "filename")
_FILE_SOURCES: Final = frozenset({"file_id", "file_data", "file_url"})
#: Text part types, whichever API shape the history was written in.
_TEXT_PART_TYPES: Final = frozenset({"text", "input_text", "output_text"})
#: ``<details type=…>`` blocks Open WebUI renders into stored assistant text. They are
#: UI (the model's thinking, tool-call cards, code runs), not the answer the model gave.
_RENDERED_DETAIL_TYPES: Final = frozenset({"reasoning", "tool_calls", "code_interpreter"})
#: Assistant fields of Chat Completions tool calling / reasoning; replay uses stored artifacts.
_ASSISTANT_EXTRAS: Final = ("tool_calls", "function_call", "reasoning_content", "reasoning_details")
#: Function names OpenRouter's providers accept; others are cleaned like ``declare_tools`` does.
_TOOL_NAME_OK: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_NAME_BAD_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")
#: Body keys this module reads (and so never lists as dropped). Reasoning keys are
#: read only when reasoning applies; see ``_reasoning``.
_READ_KEYS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "response_format",
    }
)


# --------------------------------------------------------------------------
# Public records
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSettings:
    """The merged system and user valve values the mapping needs."""

    enable_reasoning: bool = True
    #: none | minimal | low | medium | high | xhigh (| max)
    reasoning_effort: str = "medium"
    #: auto | concise | detailed | disabled ("disabled" sends no summary request)
    reasoning_summary: str = "auto"
    #: Fill ``max_output_tokens`` from the catalogue when the user gave no limit.
    use_model_max_output_tokens: bool = False
    #: Honour the chat's web-search toggle with OpenRouter's web plugin.
    enable_web_search: bool = True
    #: OpenRouter ids or exposed sub ids for which an admin forces the web plugin.
    web_search_force_models: frozenset[str] = frozenset()
    web_search_max_results: int | None = 3
    #: MAX_INPUT_IMAGES_PER_REQUEST and IMAGE_INPUT_SELECTION (see ``image_selection``).
    max_input_images: int = 5
    image_selection: ImageSelection = "user_then_assistant"
    #: BASE64_MAX_SIZE_MB in bytes: the largest inline attachment sent.
    base64_max_bytes: int = 50 * 1024 * 1024
    #: VIDEO_MAX_SIZE_MB in bytes: the largest inline (data URL) video sent.
    video_max_bytes: int = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class MappedRequest:
    """The request to run, plus what the mapping left out."""

    request: ChatRequest
    #: Body keys (and history parts) that were not sent, sorted, for a debug log line.
    dropped: tuple[str, ...]
    #: Sentences for the person chatting, e.g. that images were skipped.
    notes: tuple[str, ...]
    #: Replay problems for the operator's log (missing artifacts, unpaired calls).
    warnings: tuple[str, ...] = ()
    #: Reasoning artifacts replayed: deleted after a successful reply under next_reply.
    replayed_reasoning_ids: tuple[str, ...] = ()
    #: Announced tool name → Open WebUI's name for each renamed tool, the caller's
    #: ``tool_names`` included (pass-through: the renderer hands calls back under these).
    tool_names: Mapping[str, str] = field(default_factory=dict)


class RequestMappingError(EngineError):
    """Open WebUI's body cannot be turned into a Responses request.

    A malformed body is the caller's input, not an engine bug, so this is an
    ``EngineError`` whose message the pipe can show the person as it is.
    """

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        super().__init__(f"This chat request cannot be sent: {problem}. {fix}")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def build_request(
    body: Mapping[str, Any],
    *,
    model: ModelInfo,
    settings: RequestSettings,
    features: Mapping[str, Any] | None = None,
    user_id: str | None = None,
    request_id: str | None = None,
    replay: ReplayPlan | None = None,
    owui_tool_calls: bool = False,
    supports_tools: bool | None = None,
    strict_tools: bool = False,
    tool_names: Mapping[str, str] | None = None,
) -> MappedRequest:
    """Map one Open WebUI chat body to a ``ChatRequest`` for ``model``.

    ``features`` is ``__metadata__["features"]`` (Open WebUI pops it from the
    body before a pipe runs); when it is None the body's own ``features`` is
    used, for callers that pass a raw body. ``replay`` holds the artifacts the
    caller loaded for the markers in the history (``referenced_ids``); without
    it, markers are only removed.

    Pass-through mode (TOOL_EXECUTION_MODE open-webui) is ``owui_tool_calls``:

    * the assistant's ``tool_calls`` and the ``tool`` results become
      ``function_call`` / ``function_call_output`` items, paired by call id
      (unpaired or malformed ones are left out and named in ``warnings``);
    * the body's ``tools`` are announced in ``options["tools"]`` when
      ``supports_tools`` is True (the model's catalogue entry takes tools, and
      the caller wants tools on this request), strict when ``strict_tools``
      (ENABLE_STRICT_TOOL_CALLING); when it is False they are left out with a
      note; when it is None (a caller that announces ``__tools__`` itself)
      they are not read and are listed in ``dropped``. Renamed ones are added
      to ``MappedRequest.tool_names``;
    * ``tool_names`` (announced name → Open WebUI's name, as
      ``ToolDeclarations.renamed``) gives the names of tools the caller
      announces itself, so history calls carry the name the model was offered.

    Without ``owui_tool_calls`` the last three parameters do nothing and the
    body's ``tools`` are listed in ``dropped``: the engine cannot run them.
    Raises ``RequestMappingError`` when the body cannot be mapped.
    """
    if not isinstance(body, Mapping):
        raise RequestMappingError(
            f"the body is a {type(body).__name__}, not an object",
            "Send a chat completion body with a messages list.",
        )
    report = ReplayReport()
    tally = _Tally(
        keep_tool_calls=owui_tool_calls,
        base64_max_bytes=settings.base64_max_bytes,
        video_max_bytes=settings.video_max_bytes,
        # One list, so replay's and the tool mapping's warnings stay in the order they arose.
        warnings=report.warnings,
    )
    declared = None
    renamed: dict[str, str] = {}
    if owui_tool_calls and supports_tools is not None:
        declared = _body_tools(body.get("tools"), model, tally, supports_tools, strict_tools)
        if declared is not None:
            tally.notes.extend(declared.notes)
    if owui_tool_calls:
        renamed = {**(tool_names or {}), **(declared.renamed if declared else {})}
        tally.history_names = {owui: announced for announced, owui in renamed.items()}
    items = _map_messages(body.get("messages"), model, tally, _Replay.of(replay, model, report))
    if owui_tool_calls and replay is None:
        # OpenRouter rejects a call without its output and an output without its call.
        items = pair_function_calls(items, report.warnings)
    if model.vision:
        items, image_notes = select_images(
            items, limit=settings.max_input_images, selection=settings.image_selection
        )
        tally.notes.extend(image_notes)

    options: JsonDict = {}
    read = set(_READ_KEYS)
    _set(options, "max_output_tokens", _max_output_tokens(body, model, settings))
    for key in ("temperature", "top_p"):
        _set(options, key, _sampling_number(body, key, tally))
    _set(options, "parallel_tool_calls", _flag(body, "parallel_tool_calls", tally))
    reasoning = _reasoning(body, model, settings)
    if reasoning is not None:
        options["reasoning"] = reasoning
        read |= {"reasoning", "reasoning_effort"}
    text_format = _text_format(body.get("response_format"))
    if text_format is not None:
        options["text"] = {"format": text_format}
    toggle = features if features is not None else body.get("features")
    plugins = _plugins(model, settings, toggle, tally)
    if plugins:
        options["plugins"] = plugins
    if owui_tool_calls and supports_tools is not None:
        read.add("tools")
        if declared is not None and declared.tools:
            options["tools"] = [function_spec(tool) for tool in declared.tools]

    # A key whose value is None asked for nothing, so nothing was dropped.
    unread = {str(key) for key, value in body.items() if value is not None and key not in read}
    request = ChatRequest(
        model=model.openrouter_id,  # the exposed Open WebUI id never goes upstream
        input=tuple(items),
        options=options,
        # The same generator ChatRequest's own default uses.
        request_id=request_id if request_id is not None else new_request_id(),
        user_id=user_id,
    )
    if report.reasoning_dropped:
        tally.dropped.append(
            f"{report.reasoning_dropped} stored reasoning items (the model takes no reasoning)"
        )
    return MappedRequest(
        request=request,
        dropped=tuple(sorted(unread | set(tally.dropped))),
        notes=tuple(_notes(model, tally)),
        warnings=tuple(report.warnings),
        replayed_reasoning_ids=tuple(report.reasoning_ids),
        tool_names=renamed,
    )


# --------------------------------------------------------------------------
# Bookkeeping
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    """What the mapping skipped along the way, to report once at the end."""

    #: Parts skipped because the model lacks the capability: "image" | "file" | "audio".
    skipped: Counter[str] = field(default_factory=Counter)
    #: Part types no Responses input shape exists for (e.g. "refusal").
    unsupported: Counter[str] = field(default_factory=Counter)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Tool calls Open WebUI ran itself (TOOL_EXECUTION_MODE open-webui) are history.
    keep_tool_calls: bool = False
    #: BASE64_MAX_SIZE_MB: inline attachments larger than this are left out.
    base64_max_bytes: int = 50 * 1024 * 1024
    #: VIDEO_MAX_SIZE_MB: inline videos larger than this are left out.
    video_max_bytes: int = 100 * 1024 * 1024
    #: How many inline attachments were looked at (to name them in notes).
    attachments: int = 0
    #: For the operator's log: history parts left out because they are malformed or unpaired.
    warnings: list[str] = field(default_factory=list)
    #: Open WebUI's tool name → the name announced upstream, for renamed tools.
    history_names: dict[str, str] = field(default_factory=dict)
    #: ``function_call`` item ids given so far: each must be unique in one input.
    call_item_ids: set[str] = field(default_factory=set)

    def refused(self, error: AttachmentError) -> None:
        """One attachment left out: the user reads why; the rest of the request goes on."""
        self.notes.append(error.reason[:1].upper() + error.reason[1:] + ".")

    def inline_ok(self, url: str, kind: str, limit_bytes: int) -> bool:
        """A link passes; inline data must be a readable data URL within ``limit_bytes``
        (checked from its length, never decoded here). A refusal becomes a note."""
        if url[:5].lower() != "data:":
            return True
        try:
            check_data_url(url, limit_bytes=limit_bytes, what=self.inline_name(kind))
        except AttachmentError as exc:
            self.refused(exc)
            return False
        return True

    def inline_name(self, kind: str) -> str:
        self.attachments += 1
        return f"attachment {self.attachments} ({kind})"


#: kind → (what the model does not accept, singular noun, plural noun)
_SKIP_WORDING: Final = {
    "image": ("images", "image", "images"),
    "file": ("files", "file", "files"),
    "audio": ("audio", "audio clip", "audio clips"),
    "video": ("video", "video", "videos"),
}


def _notes(model: ModelInfo, tally: _Tally) -> list[str]:
    who = model.name or "This model"
    notes = []
    for kind, (accepted, singular, plural) in _SKIP_WORDING.items():
        count = tally.skipped[kind]
        if count:
            noun = singular if count == 1 else plural
            notes.append(f"{who} does not accept {accepted}; {count} {noun} skipped.")
    count = sum(tally.unsupported.values())
    if count:
        kinds = ", ".join(sorted(tally.unsupported))
        noun = "attachment" if count == 1 else "attachments"
        notes.append(f"{count} {noun} of an unsupported kind ({kinds}) skipped.")
    return notes + tally.notes


def _set(options: JsonDict, key: str, value: Any) -> None:
    # OpenRouter rejects explicit nulls for optional fields (contract §1.2).
    if value is not None:
        options[key] = value


# --------------------------------------------------------------------------
# History → input items
# --------------------------------------------------------------------------

RoleMapper = Callable[[int, Mapping[str, Any], ModelInfo, _Tally], JsonDict | None]


@dataclass(frozen=True, slots=True)
class _Replay:
    """One request's replay: the caller's plan, whether reasoning goes, and the report."""

    plan: ReplayPlan
    keep_reasoning: bool
    report: ReplayReport

    @classmethod
    def of(cls, plan: ReplayPlan | None, model: ModelInfo, report: ReplayReport) -> _Replay | None:
        # Reasoning items only for models that take reasoning: see artifact_replay.
        return None if plan is None else cls(plan, model.reasoning, report)


def _map_messages(
    messages: Any, model: ModelInfo, tally: _Tally, replay: _Replay | None
) -> list[JsonDict]:
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
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RequestMappingError(
                f"messages[{index}] is a {type(message).__name__}, not an object",
                "Each message needs a role and content.",
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
            items.extend(_tool_call_items(index, message, tally))
            continue
        item = mapper(index, message, model, tally)
        if item is not None:
            items.append(item)
        if role == "assistant":
            items.extend(_tool_call_items(index, message, tally))
    if replay is not None:
        items = _with_orphans(items, newest_turn_at, replay)
    if not items:
        skipped = f" ({' '.join(_notes(model, tally))})" if tally.skipped else ""
        raise RequestMappingError(
            f"no message has anything this model can read{skipped}",
            "Write a message in text, or pick a model that accepts the attachments.",
        )
    return items


def _instruction_item(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    """A system or developer message stays a message with its role (not user text)."""
    text = _flatten_text(message.get("content"), f"messages[{index}]")
    if not text.strip():
        return None
    return {
        "type": "message",
        "role": message["role"],
        "content": [{"type": "input_text", "text": text}],
    }


def _user_item(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    where = f"messages[{index}]"
    content = message.get("content")
    if content is None:
        parts: list[JsonDict] = []
    elif isinstance(content, str):
        parts = [{"type": "input_text", "text": content}] if content else []
    elif isinstance(content, list | tuple):
        parts = _user_parts(content, where, model, tally)
    else:
        raise RequestMappingError(
            f"{where} (user) has content of type {type(content).__name__}",
            "User content must be text or a list of content parts.",
        )
    if not parts:
        return None
    return {"type": "message", "role": "user", "content": parts}


def _assistant_item(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    """An assistant message without replay: its text only, marker lines removed."""
    segments = split_at_markers(_assistant_text(index, message, tally))
    text = "\n\n".join(piece for piece in segments if isinstance(piece, str))
    return _assistant_message(index, text, 0) if text else None


def _replayed_assistant(
    index: int, message: Mapping[str, Any], tally: _Tally, replay: _Replay, turns_ago: int
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
    items: list[JsonDict], newest_turn_at: int | None, replay: _Replay
) -> list[JsonDict]:
    """``items`` with the orphans before the newest user turn, then paired by call_id."""
    at = len(items) if newest_turn_at is None else newest_turn_at
    orphans = orphan_items(replay.plan, replay.report, keep_reasoning=replay.keep_reasoning)
    return pair_function_calls([*items[:at], *orphans, *items[at:]], replay.report.warnings)


def _assistant_text(index: int, message: Mapping[str, Any], tally: _Tally) -> str:
    where = f"messages[{index}]"
    for key in _ASSISTANT_EXTRAS:
        if message.get(key) and not (key == "tool_calls" and tally.keep_tool_calls):
            tally.dropped.append(f"{where}.{key}")
    # The model must not read its own rendered thinking back as answer text.
    return strip_rendered_blocks(_flatten_text(message.get("content"), where))


def _assistant_message(index: int, text: str, ordinal: int) -> JsonDict:
    # The first segment keeps the id a marker-free message gets, so adding replay
    # does not change the id of text the model has seen before.
    key = text if ordinal == 0 else f"{ordinal}\n{text}"
    return {
        "type": "message",
        "role": "assistant",
        # OpenRouter requires id and status on assistant history (contract §4.8).
        "id": _assistant_id(index, key),
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _tool_call_items(index: int, message: Mapping[str, Any], tally: _Tally) -> list[JsonDict]:
    """An assistant message's ``tool_calls`` as ``function_call`` items (pass-through mode).

    Open WebUI 0.12.4 sends each as ``{id, type: "function", function: {name,
    arguments}}`` (``utils/misc.py`` ``convert_output_to_messages``). An entry
    without an id or a function name cannot be paired or replayed: it is left
    out with a warning (and its result then is too, as unpaired).
    """
    calls = message.get("tool_calls")
    if not tally.keep_tool_calls or calls is None:
        return []
    where = f"messages[{index}].tool_calls"
    if not isinstance(calls, list | tuple):
        tally.warnings.append(f"{where} is a {type(calls).__name__}, not a list; left out")
        return []
    items: list[JsonDict] = []
    for n, call in enumerate(calls):
        item = _function_call_item(call, f"{where}[{n}]", tally)
        if item is not None:
            items.append(item)
    return items


def _function_call_item(call: Any, where: str, tally: _Tally) -> JsonDict | None:
    if not isinstance(call, Mapping):
        tally.warnings.append(f"{where} is a {type(call).__name__}, not an object; left out")
        return None
    kind = call.get("type", "function")
    function = call.get("function")
    if kind != "function" or not isinstance(function, Mapping):
        tally.warnings.append(f"{where} is not a function call ({kind!r}); left out")
        return None
    call_id, name = _id_text(call.get("id")), function.get("name")
    if call_id is None or not isinstance(name, str) or not name.strip():
        missing = "id" if call_id is None else "function name"
        tally.warnings.append(f"{where} has no {missing}; left out")
        return None
    return {
        "type": "function_call",
        # OpenRouter requires an id on function_call input (contract §1.3, §4.8).
        "id": _call_item_id(call_id, tally),
        "call_id": call_id,
        "name": _history_tool_name(name, tally),
        "arguments": _arguments_text(function.get("arguments")),
        "status": "completed",
    }


def _call_item_id(call_id: str, tally: _Tally) -> str:
    """A stable item id for a call: ``fc_`` + its call id (OpenAI checks the ``fc``
    prefix, see ``artifact_replay``), suffixed when a call id comes back in a later
    round (some providers restart their ids), because input item ids must be unique."""
    base = call_id if call_id.startswith("fc") else f"fc_{call_id}"
    item_id, n = base, 1
    while item_id in tally.call_item_ids:
        n += 1
        item_id = f"{base}_{n}"
    tally.call_item_ids.add(item_id)
    return item_id


def _history_tool_name(name: str, tally: _Tally) -> str:
    """The name the model was offered for a tool Open WebUI knows as ``name``.

    The renderer hands a call to a renamed tool back under Open WebUI's name, so
    it comes back under that name too; the model must read the one it called.
    A name with no known rename but characters providers refuse is cleaned.
    """
    announced = tally.history_names.get(name)
    if announced is not None:
        return announced
    if _TOOL_NAME_OK.match(name):
        return name
    return _TOOL_NAME_BAD_CHARS.sub("_", name)[:64]


def _arguments_text(arguments: Any) -> str:
    """The arguments as the JSON string the Responses API takes.

    A string is kept byte for byte, even when it is not valid JSON: it is what
    the model wrote, and the tool's result (Open WebUI's "could not be parsed")
    explains what went wrong. Only an empty string becomes ``{}``: a call with
    no arguments, which a provider converting it to an object could not parse.
    """
    if isinstance(arguments, str):
        return arguments if arguments.strip() else "{}"
    if arguments is None:
        return "{}"
    return json.dumps(arguments, ensure_ascii=False, default=str)


def _tool_result(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    """A tool's result as ``function_call_output`` (pass-through mode); dropped otherwise.

    In engine mode the engine runs tools itself and replays their outputs
    from storage, so results of tools Open WebUI ran are not history. A result
    without ``tool_call_id`` (the legacy ``function`` role has none) cannot be
    paired with its call and is left out with a warning.
    """
    where = f"messages[{index}] (role {message['role']})"
    if not tally.keep_tool_calls:
        tally.dropped.append(where)
        return None
    call_id = _id_text(message.get("tool_call_id"))
    if call_id is None:
        tally.warnings.append(f"{where} has no tool_call_id; left out")
        return None
    output = _tool_output(message.get("content"), where, tally)
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _tool_output(content: Any, where: str, tally: _Tally) -> str:
    """A tool message's content as text.

    0.12.4 already sends a string. A list of parts (other clients) keeps its
    text parts, joined as Open WebUI joins them; other parts are listed as
    dropped. Anything else is a value a client put there: sent as JSON rather
    than refusing the whole request over one tool result.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        texts = []
        for part in content:
            text = part if isinstance(part, str) else _part_text(part)
            if text is None:
                tally.dropped.append(f"{where} non-text output part")
            else:
                texts.append(text)
        return "".join(texts)
    if isinstance(content, Mapping):
        text = _part_text(content) if "type" in content else None
        if text is not None:
            return text
    return json.dumps(content, ensure_ascii=False, default=str)


def _id_text(value: Any) -> str | None:
    """A call id as text; None when there is none (bools are not ids)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if text.strip() else None


_ROLE_MAPPERS: Final[dict[str, RoleMapper]] = {
    "system": _instruction_item,
    "developer": _instruction_item,
    "user": _user_item,
    "assistant": _assistant_item,
    "tool": _tool_result,
    "function": _tool_result,
}


def _assistant_id(index: int, text: str) -> str:
    """A stable id: the same turn at the same position gets the same id every time.

    Stability keeps each request's prefix identical to the last one's, which is
    what provider prompt caches key on.
    """
    digest = hashlib.sha256(f"{index}\n{text}".encode("utf-8", "surrogatepass"))
    return f"msg_{digest.hexdigest()[:24]}"


def _flatten_text(content: Any, where: str) -> str:
    """Text of a system, developer or assistant message: a string, text parts or one dict."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return _part_text(content) or ""
    if isinstance(content, list | tuple):
        texts = (part if isinstance(part, str) else _part_text(part) for part in content)
        return "\n".join(text for text in texts if text)
    raise RequestMappingError(
        f"{where} has content of type {type(content).__name__}",
        "Message content must be text or a list of content parts.",
    )


def _part_text(part: Any) -> str | None:
    # Non-text parts (an image in a system prompt, say) carry no text to keep.
    if not isinstance(part, Mapping):
        return None
    if part.get("type", "text") not in _TEXT_PART_TYPES:
        return None
    text = part.get("text")
    return text if isinstance(text, str) else None


# --------------------------------------------------------------------------
# User content parts: one function per part type
# --------------------------------------------------------------------------

PartMapper = Callable[[Mapping[str, Any], str, ModelInfo, _Tally], JsonDict | None]


def _user_parts(
    content: list[Any] | tuple[Any, ...], where: str, model: ModelInfo, tally: _Tally
) -> list[JsonDict]:
    parts = []
    for position, raw in enumerate(content):
        here = f"{where}.content[{position}]"
        # Some clients send a bare string for a text part.
        part = {"type": "text", "text": raw} if isinstance(raw, str) else raw
        if not isinstance(part, Mapping):
            raise RequestMappingError(
                f"{here} is a {type(part).__name__}, not a content part",
                "Content parts must be objects with a type.",
            )
        kind = part.get("type")
        mapper = _PART_MAPPERS.get(kind) if isinstance(kind, str) else None
        if mapper is None:
            tally.unsupported[str(kind)] += 1
            continue
        mapped = mapper(part, here, model, tally)
        if mapped is not None:
            parts.append(mapped)
    return parts


def _text_part(
    part: Mapping[str, Any], where: str, model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise RequestMappingError(f"{where} is a text part without text", "Give it a text string.")
    return {"type": "input_text", "text": text} if text else None


def _image_part(
    part: Mapping[str, Any], where: str, model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    if not model.vision:
        tally.skipped["image"] += 1
        return None
    # Chat Completions nests {url, detail}; Responses and older clients give a bare string.
    source = part.get("image_url")
    if isinstance(source, Mapping):
        url, detail = source.get("url"), source.get("detail")
    else:
        url, detail = source, part.get("detail")
    if not isinstance(url, str) or not url:
        raise RequestMappingError(
            f"{where} is an image part without a URL", "Attach the image again."
        )
    if not tally.inline_ok(url, "image", tally.base64_max_bytes):
        return None
    return {
        "type": "input_image",
        "image_url": url,
        "detail": detail if detail in _IMAGE_DETAILS else "auto",
    }


def _file_part(
    part: Mapping[str, Any], where: str, model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    if not model.file_input:
        tally.skipped["file"] += 1
        return None
    # Chat Completions nests the fields under "file"; Responses puts them on the part.
    nested = part.get("file")
    source = nested if isinstance(nested, Mapping) else part
    fields = {
        key: source[key] for key in _FILE_FIELDS if isinstance(source.get(key), str) and source[key]
    }
    if not _FILE_SOURCES & fields.keys():
        raise RequestMappingError(
            f"{where} is a file part without file_id, file_data or file_url",
            "Attach the file again.",
        )
    data = fields.get("file_data", "")
    if data[:5].lower() == "data:":
        name = tally.inline_name(f"file {fields.get('filename') or 'without a name'}")
        try:
            check_data_url(data, limit_bytes=tally.base64_max_bytes, what=name)
        except AttachmentError as exc:
            tally.refused(exc)
            return None
    return {"type": "input_file", **fields}


def _audio_part(
    part: Mapping[str, Any], where: str, model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    """Audio is sent inline (base64) as mp3 or wav; links and other formats are refused.

    Accepted: ``{data, format}``, or a ``data:audio/...;base64,`` URL as the
    data (its media type then gives the format).
    """
    if not model.audio_input:
        tally.skipped["audio"] += 1
        return None
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else audio
    audio_format = audio.get("format") if isinstance(audio, Mapping) else None
    if isinstance(data, str) and data[:5].lower() == "data:":
        name = tally.inline_name("audio")
        try:
            media_type, data = check_data_url(data, limit_bytes=tally.base64_max_bytes, what=name)
        except AttachmentError as exc:
            tally.refused(exc)
            return None
        audio_format = audio_format or media_type
    if not isinstance(data, str) or not data or not isinstance(audio_format, str):
        raise RequestMappingError(
            f"{where} is an audio part without data and format",
            "Attach the recording again.",
        )
    if data[:8].lower().startswith(("http://", "https://")):
        tally.refused(AttachmentError("audio links are not supported; attach the recording"))
        return None
    fmt = _AUDIO_FORMATS.get(audio_format.lower())
    if fmt is None:
        tally.refused(
            AttachmentError(f"audio in {audio_format!r} is not supported; send mp3 or wav")
        )
        return None
    try:
        check_base64(data, limit_bytes=tally.base64_max_bytes, what=tally.inline_name("audio"))
    except AttachmentError as exc:
        tally.refused(exc)
        return None
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def _video_part(
    part: Mapping[str, Any], where: str, model: ModelInfo, tally: _Tally
) -> JsonDict | None:
    """A video as ``input_video`` with its ``video_url``: a link or a data URL.

    Links are never downloaded: OpenRouter hands them to the provider (Gemini
    on AI Studio takes YouTube links only). The intake pass vets other links
    against the SSRF rules and inlines Open WebUI's own; a data URL is checked
    here against VIDEO_MAX_SIZE_MB before anything decodes it.
    """
    if not model.video_input:
        tally.skipped["video"] += 1
        return None
    # Chat Completions nests {url}; the Responses shape gives a bare string.
    source = part.get("video_url")
    url = source.get("url") if isinstance(source, Mapping) else source
    if not isinstance(url, str) or not url.strip():
        raise RequestMappingError(
            f"{where} is a video part without a URL", "Attach the video again."
        )
    if not tally.inline_ok(url, "video", tally.video_max_bytes):
        return None
    return {"type": "input_video", "video_url": url.strip()}


#: Audio formats the Responses API takes, by the names clients use for them.
_AUDIO_FORMATS: Final = {
    "mp3": "mp3",
    "mpeg": "mp3",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "wav": "wav",
    "wave": "wav",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
}


_PART_MAPPERS: Final[dict[str, PartMapper]] = {
    "text": _text_part,
    "input_text": _text_part,
    "image_url": _image_part,
    "input_image": _image_part,
    "file": _file_part,
    "input_file": _file_part,
    "input_audio": _audio_part,
    "video_url": _video_part,
    "input_video": _video_part,
}


# --------------------------------------------------------------------------
# Rendered <details> blocks in assistant history
# --------------------------------------------------------------------------

_DETAILS_TAG = re.compile(r"<(/?)details\b([^>]*)>", re.IGNORECASE)
_TYPE_ATTRIBUTE = re.compile(r"""\btype\s*=\s*["']?([\w-]+)""", re.IGNORECASE)


def strip_rendered_blocks(text: str) -> str:
    """``text`` without Open WebUI's rendered reasoning, tool-call and code-run blocks.

    Open WebUI 0.12.4 rebuilds history from stored output items, which carry
    no such blocks, but chats stored by older versions (and temporary chats of
    some clients) keep ``<details type="reasoning" …>…</details>`` inside the
    assistant text. Nested ``<details>`` are matched by depth rather than with a
    lazy regex, so a block holding another block (or code with ``` fences) is
    removed whole; an unclosed block runs to the end, as a browser renders it.
    Other ``<details>`` (ones the model wrote as part of its answer) stay.
    """
    if "<details" not in text.lower():
        return text  # the common case: nothing to scan
    kept: list[str] = []
    resume = 0  # where the text after the last removed block starts
    depth = 0  # > 0 while inside a block being removed
    for tag in _DETAILS_TAG.finditer(text):
        closing = tag.group(1) == "/"
        if depth:
            depth += -1 if closing else 1
            if not depth:
                resume = tag.end()
        elif not closing and _rendered_type(tag.group(2)):
            kept.append(text[resume : tag.start()])
            depth = 1
    if not depth:
        kept.append(text[resume:])
    return "".join(kept)


def _rendered_type(attributes: str) -> bool:
    found = _TYPE_ATTRIBUTE.search(attributes)
    return found is not None and found.group(1).lower() in _RENDERED_DETAIL_TYPES


# --------------------------------------------------------------------------
# The body's tools (pass-through mode)
# --------------------------------------------------------------------------


def _body_tools(
    tools: Any, model: ModelInfo, tally: _Tally, supported: bool, strict: bool
) -> ToolDeclarations | None:
    """The body's Chat Completions ``tools`` declared for the Responses API.

    With native function calling (0.12.4's default) ``process_chat_payload``
    puts ``{type: "function", function: spec}`` there for every tool Open WebUI
    would offer a model: deferred ones behind its tool search left out, tools
    added by inlet filters included; an API client puts its own there. Names,
    strict schemas and the unsupported-model note are ``declare_tools``'s.
    """
    if tools is None:
        return None
    if not isinstance(tools, list | tuple):
        tally.warnings.append(f"tools is a {type(tools).__name__}, not a list; left out")
        return None
    specs: dict[str, Any] = {}
    for n, tool in enumerate(tools):
        kind = tool.get("type", "function") if isinstance(tool, Mapping) else None
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if kind != "function":
            # No Responses shape to translate it to (e.g. a "custom" tool).
            tally.dropped.append(f"tools[{n}] (type {kind!r})")
            continue
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            tally.warnings.append(f"tools[{n}] has no function name; left out")
            continue
        if name in specs:
            tally.warnings.append(f"tools[{n}] repeats the tool {name!r}; the first one is kept")
            continue
        # declare_tools reads Open WebUI's __tools__ shape: name → {"spec": ...}.
        specs[name] = {"spec": function}
    return declare_tools(specs, supports_tools=supported, strict=strict, model=model.name)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


def _max_output_tokens(
    body: Mapping[str, Any], model: ModelInfo, settings: RequestSettings
) -> int | None:
    # The newer Chat Completions name first; both mean the user's own limit.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            return _positive_int(value, key)
    if settings.use_model_max_output_tokens:
        return model.max_output_tokens
    return None


def _positive_int(value: Any, key: str) -> int:
    # A limit the user set is a cost bound: a malformed one is refused, not ignored.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RequestMappingError(
            f"{key} is {value!r}, not a positive whole number",
            "Fix max tokens in the chat's or model's advanced parameters.",
        )
    return value


def _sampling_number(body: Mapping[str, Any], key: str, tally: _Tally) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        tally.dropped.append(key)  # not a number: sending it would only earn a 400
        return None
    return value


def _flag(body: Mapping[str, Any], key: str, tally: _Tally) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    tally.dropped.append(key)
    return None


def _reasoning(
    body: Mapping[str, Any], model: ModelInfo, settings: RequestSettings
) -> JsonDict | None:
    """The ``reasoning`` object, only for models that take one and when enabled."""
    if not (model.reasoning and settings.enable_reasoning):
        return None
    config: JsonDict = {"effort": _effort(body.get("reasoning_effort"), settings)}
    if settings.reasoning_summary != "disabled":
        config["summary"] = settings.reasoning_summary
    caller = body.get("reasoning")
    if caller is not None:
        if not isinstance(caller, Mapping):
            raise RequestMappingError(
                f"reasoning is a {type(caller).__name__}, not an object",
                'Give reasoning as an object such as {"effort": "high"}.',
            )
        # The caller's explicit values win over the valves.
        config.update({str(key): value for key, value in caller.items() if value is not None})
    return config


def _effort(requested: Any, settings: RequestSettings) -> str:
    if requested is None:
        return settings.reasoning_effort
    effort = requested.strip().lower() if isinstance(requested, str) else None
    if effort == "":
        return settings.reasoning_effort  # an emptied form field asks for nothing
    if effort not in REASONING_EFFORTS:
        raise RequestMappingError(
            f"reasoning_effort is {requested!r}",
            f"Use one of {', '.join(sorted(REASONING_EFFORTS))} in the advanced parameters.",
        )
    return effort


def _text_format(response_format: Any) -> JsonDict | None:
    """Chat Completions ``response_format`` → Responses ``text.format``."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None  # plain text is the default; nothing to ask for
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        return _json_schema_format(response_format.get("json_schema"))
    raise RequestMappingError(
        f"response_format {response_format!r} is not understood",
        'Use {"type": "text"}, {"type": "json_object"} or '
        '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}.',
    )


def _json_schema_format(spec: Any) -> JsonDict:
    fix = 'Give response_format.json_schema as {"name": ..., "schema": {...}, "strict": true}.'
    if not isinstance(spec, Mapping):
        raise RequestMappingError("response_format.json_schema is missing", fix)
    name, schema = spec.get("name"), spec.get("schema")
    if not isinstance(name, str) or not name:
        raise RequestMappingError("response_format.json_schema has no name", fix)
    if not isinstance(schema, Mapping):
        raise RequestMappingError("response_format.json_schema has no schema object", fix)
    text_format: JsonDict = {"type": "json_schema", "name": name, "schema": schema}
    strict = spec.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise RequestMappingError(f"response_format.json_schema.strict is {strict!r}", fix)
        text_format["strict"] = strict
    description = spec.get("description")
    if isinstance(description, str) and description:
        text_format["description"] = description
    return text_format


def _plugins(
    model: ModelInfo, settings: RequestSettings, features: Any, tally: _Tally
) -> list[JsonDict]:
    """OpenRouter's web plugin: on the chat's toggle or an admin's force list only.

    The plugin is billed per request, so it is never attached merely because
    the model has web-search pricing (the original did; seed inventory §B.3.16).
    """
    toggled = isinstance(features, Mapping) and bool(features.get("web_search"))
    forced = bool({model.openrouter_id, model.sub_id} & settings.web_search_force_models)
    if toggled and not settings.enable_web_search and not forced:
        tally.notes.append(
            "Web search is turned off in this pipe's settings; answering without it."
        )
    if not (forced or (toggled and settings.enable_web_search)):
        return []
    plugin: JsonDict = {"id": "web"}
    _set(plugin, "max_results", settings.web_search_max_results)
    return [plugin]
