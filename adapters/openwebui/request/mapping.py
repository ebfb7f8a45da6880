"""One Open WebUI chat body → one ``ChatRequest``: the mapping's entry point.

``build_request`` runs the seams in order (the body's tools in pass-through
mode, the history with its replayed artifacts, image selection, the options)
and builds the ``ChatRequest`` once, with what the chat turn adds
(``TurnAdditions``: its tools, where its artifacts go, the user's streaming
and log settings). It is pure and synchronous: no I/O, no clock, no
randomness beyond the request id ``ChatRequest`` makes when none is given.
The same body always maps to the same input, which is what keeps assistant
history ids stable for caching.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.artifact_replay import ReplayPlan, ReplayReport, pair_function_calls
from orpipe.adapters.openwebui.image_selection import select_images
from orpipe.adapters.openwebui.request.messages import Replay, map_messages
from orpipe.adapters.openwebui.request.options import body_options
from orpipe.adapters.openwebui.request.passthrough_tools import body_tools
from orpipe.adapters.openwebui.request.settings import RequestSettings
from orpipe.adapters.openwebui.request.tally import (
    JsonDict,
    Tally,
    expect_mapping,
    skip_notes,
)
from orpipe.adapters.openwebui.tool_specs import function_spec
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.messages import ChatRequest, new_request_id
from orpipe.engine.tools import Tool

__all__ = ["MappedRequest", "TurnAdditions", "build_request"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnAdditions:
    """What a chat turn adds to the request beyond its body; the defaults add nothing."""

    #: Announced after the body's own tools: MCP servers, and the chat's ``__tools__``
    #: in pass-through mode (Open WebUI runs those).
    announced_tools: tuple[JsonDict, ...] = ()
    #: The chat's tools the engine runs (engine mode).
    tools: Mapping[str, Tool] | None = None
    #: Where the answer's artifacts are stored; None = not stored.
    artifacts: ArtifactContext | None = None
    #: The user's own LOG_LEVEL, for this request's records only.
    log_level: str | None = None
    #: The user's streaming profile (``ChatRequest`` says what each overrides).
    update_char_limit: int | None = None
    idle_flush_ms: float | None = None


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
    turn: TurnAdditions = TurnAdditions(),
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

    ``turn`` is what a chat turn adds (``TurnAdditions``); the request is
    built once, with it. Raises ``RequestMappingError`` when the body cannot
    be mapped.
    """
    expect_mapping(body, "the body", "Send a chat completion body with a messages list.")
    report = ReplayReport()
    tally = Tally(
        keep_tool_calls=owui_tool_calls,
        base64_max_bytes=settings.base64_max_bytes,
        video_max_bytes=settings.video_max_bytes,
        # One list, so replay's and the tool mapping's warnings stay in the order they arose.
        warnings=report.warnings,
    )
    declared = None
    renamed: dict[str, str] = {}
    if owui_tool_calls and supports_tools is not None:
        declared = body_tools(body.get("tools"), model, tally, supports_tools, strict_tools)
        if declared is not None:
            tally.notes.extend(declared.notes)
    if owui_tool_calls:
        renamed = {**(tool_names or {}), **(declared.renamed if declared else {})}
        tally.history_names = {owui: announced for announced, owui in renamed.items()}
    items = map_messages(body.get("messages"), model, tally, Replay.of(replay, model, report))
    if owui_tool_calls and replay is None:
        # OpenRouter rejects a call without its output and an output without its call.
        items = pair_function_calls(items, report.warnings)
    if model.vision:
        items, image_notes = select_images(
            items, limit=settings.max_input_images, selection=settings.image_selection
        )
        tally.notes.extend(image_notes)
    toggle = features if features is not None else body.get("features")
    options, read = body_options(body, model, settings, toggle, tally)
    if owui_tool_calls and supports_tools is not None:
        read.add("tools")
        if declared is not None and declared.tools:
            options["tools"] = [function_spec(tool) for tool in declared.tools]
    if turn.announced_tools:
        options["tools"] = [*options.get("tools", ()), *turn.announced_tools]
    # A key whose value is None asked for nothing, so nothing was dropped.
    unread = {str(key) for key, value in body.items() if value is not None and key not in read}
    request = ChatRequest(
        model=model.openrouter_id,  # the exposed Open WebUI id never goes upstream
        input=tuple(items),
        options=options,
        # The same generator ChatRequest's own default uses.
        request_id=request_id if request_id is not None else new_request_id(),
        user_id=user_id,
        log_level=turn.log_level,
        update_char_limit=turn.update_char_limit,
        idle_flush_ms=turn.idle_flush_ms,
        artifacts=turn.artifacts,
        tools=turn.tools,
    )
    if report.reasoning_dropped:
        tally.dropped.append(
            f"{report.reasoning_dropped} stored reasoning items (the model takes no reasoning)"
        )
    return MappedRequest(
        request=request,
        dropped=tuple(sorted(unread | set(tally.dropped))),
        notes=tuple(skip_notes(model, tally)),
        warnings=tuple(report.warnings),
        replayed_reasoning_ids=tuple(report.reasoning_ids),
        tool_names=renamed,
    )
