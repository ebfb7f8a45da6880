"""One chat turn planned without I/O: the request to submit, and the work around it.

``plan_turn`` takes what the runner (``adapters.openwebui.turn``) gathered
before it: the settings read once, the body, the ``pipe()`` call's context,
the model chosen from the catalogue (``choose_model``) and the history
loaded behind the bridge. It returns a ``TurnPlan``: one complete
``ChatRequest`` (input, tools, the user's streaming limits and log level,
where the answer's artifacts go), built once, plus what the runner does
around it: attachments for the intake pass, notices for the person chatting,
lines for the operator's log, and what to forget after a good reply.
Nothing here awaits, so every rule of a turn's request is tested without a
loop; the one loop it names is where the chat's tools will run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orpipe.adapters.openrouter.catalogue import Catalogue, ModelInfo
from orpipe.adapters.openwebui.history import Loaded
from orpipe.adapters.openwebui.request import (
    RequestSettings,
    TurnAdditions,
    build_request,
)
from orpipe.adapters.openwebui.tool_specs import ToolDeclarations, declare_tools, function_spec
from orpipe.adapters.openwebui.tools import engine_tools
from orpipe.adapters.openwebui.turn_context import PipeError, TurnContext
from orpipe.adapters.openwebui.valves import EffectiveSettings, Valves
from orpipe.engine import ChatRequest, EngineConfig
from orpipe.engine.artifacts import ArtifactContext

__all__ = ["TurnHistory", "TurnPlan", "TurnSettings", "choose_model", "plan_turn"]


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The valves read once for this turn (Open WebUI swaps ``pipe.valves`` per
    dispatch), and what they give: the key, the engine's config, the user's merge."""

    valves: Valves
    api_key: str
    config: EngineConfig
    effective: EffectiveSettings


@dataclass(frozen=True, slots=True)
class TurnHistory:
    """What the runner loaded of the chat for this turn."""

    #: Where the answer's artifacts go; None when this turn stores none (a task,
    #: no store, a temporary chat, the user's DB breaker open).
    context: ArtifactContext | None
    loaded: Loaded = field(default_factory=lambda: Loaded(plan=None))


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnPlan:
    """The request to submit, built once, and the side work the runner does around it."""

    request: ChatRequest
    #: The input holds stored files or links: the intake pass prepares them
    #: (a status while it runs) and the runner sends its input instead.
    needs_intake: bool
    #: For the person chatting, shown before submit: the mapping's notes come
    #: before the intake pass's, the tools' after them.
    mapping_notes: tuple[str, ...]
    tool_notes: tuple[str, ...]
    #: For the operator's log: body fields not sent, replay problems.
    dropped: tuple[str, ...]
    warnings: tuple[str, ...]
    #: Pass-through: announced tool name → Open WebUI's own name, where they differ.
    tool_names: Mapping[str, str]
    #: Replayed reasoning to delete after a successful reply (retention next_reply).
    forget: tuple[str, ...]
    #: The chat is one Open WebUI keeps: the next turn finds this answer's
    #: artifacts by its message id, so the answer carries no reference lines.
    keyed_by_branch: bool


def choose_model(
    catalogue: Catalogue, valves: Valves, body: Mapping[str, Any], ctx: TurnContext
) -> ModelInfo:
    """The model the turn asks for, known to OpenRouter and enabled by MODEL_ID; or PipeError."""
    requested = _requested_model(body, ctx)
    model = catalogue.resolve(requested)
    if model is None:
        raise PipeError(
            f"The model {requested!r} is not in OpenRouter's model list. Pick another model; "
            "if it was renamed upstream, reload the model list."
        )
    enabled = catalogue.select(valves.MODEL_ID).models
    if model not in enabled:
        raise PipeError(
            f"The model {model.openrouter_id!r} is not enabled for this Function. "
            "An administrator can add it to the MODEL_ID valve."
        )
    return model


def _requested_model(body: Mapping[str, Any], ctx: TurnContext) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        meta_model = ctx.metadata.get("model")
        if isinstance(meta_model, Mapping):
            model = meta_model.get("id")
    if not isinstance(model, str) or not model:
        raise PipeError("The request names no model. Pick a model and send the message again.")
    return model


def plan_turn(
    settings: TurnSettings,
    body: Mapping[str, Any],
    ctx: TurnContext,
    model: ModelInfo,
    history: TurnHistory,
    *,
    loop: asyncio.AbstractEventLoop,
) -> TurnPlan:
    """The turn's request and side work; raises ``RequestMappingError`` for a body that
    cannot be sent. ``loop`` is where the chat's tools run in engine mode."""
    valves, effective = settings.valves, settings.effective
    passthrough = valves.TOOL_EXECUTION_MODE == "open-webui"
    context = history.context
    if context is not None and passthrough:
        # Open WebUI keeps the calls and results it ran in its own history.
        context = replace(context, function_calls=False)
    declared = _declared_tools(valves, ctx, model)
    loaded = history.loaded
    if loaded.messages is not None:  # the branch's artifacts placed, in memory only
        body = {**body, "messages": list(loaded.messages)}
    mapped = build_request(
        body,
        model=model,
        settings=_request_settings(valves, effective),
        features=_features(ctx),
        user_id=ctx.user_id,
        replay=loaded.plan,
        owui_tool_calls=passthrough,
        # An API client's own tools come in the body; a chat's come in __tools__
        # (and again in the body, which is then not read, so none is announced twice).
        supports_tools=(model.tools if passthrough and _no_chat_tools(ctx) else None),
        strict_tools=valves.ENABLE_STRICT_TOOL_CALLING,
        tool_names=declared.renamed,
        turn=_turn_additions(settings, ctx, model, declared, context=context, loop=loop),
    )
    reasoning_once = context is not None and context.reasoning == "next_reply"
    return TurnPlan(
        request=mapped.request,
        needs_intake=any(_needs_intake(item) for item in mapped.request.input),
        mapping_notes=mapped.notes,
        tool_notes=declared.notes,
        dropped=mapped.dropped,
        warnings=mapped.warnings,
        tool_names=mapped.tool_names,
        forget=mapped.replayed_reasoning_ids if reasoning_once else (),
        keyed_by_branch=loaded.messages is not None,
    )


def _declared_tools(valves: Valves, ctx: TurnContext, model: ModelInfo) -> ToolDeclarations:
    """The chat's ``__tools__`` declared for this model; none for titles, tags and other tasks."""
    if ctx.task is not None:
        return ToolDeclarations()
    return declare_tools(
        ctx.tools,
        supports_tools=model.tools,
        strict=valves.ENABLE_STRICT_TOOL_CALLING,
        model=model.name,
    )


def _no_chat_tools(ctx: TurnContext) -> bool:
    return ctx.task is None and not ctx.tools


def _turn_additions(
    settings: TurnSettings,
    ctx: TurnContext,
    model: ModelInfo,
    declared: ToolDeclarations,
    *,
    context: ArtifactContext | None,
    loop: asyncio.AbstractEventLoop,
) -> TurnAdditions:
    """What the turn adds to the body's request: the chat's tools and the MCP servers,
    where the artifacts go, the user's log level and streaming profile.

    Engine mode: each Open WebUI tool becomes an engine ``Tool`` run on Open
    WebUI's loop (``adapters.openwebui.tools``). Pass-through mode: the tools are
    only announced; the model's calls go back to Open WebUI as
    ``delta.tool_calls``. Titles, tags and other tasks never get tools.
    """
    valves, effective = settings.valves, settings.effective
    announced: list[dict[str, Any]] = []
    tools = None
    if ctx.task is None:
        announced = [dict(server) for server in (valves.mcp_servers() if model.tools else ())]
        if valves.TOOL_EXECUTION_MODE == "open-webui":
            announced += [function_spec(tool) for tool in declared.tools]
        elif declared.tools:
            session_id = ctx.metadata.get("session_id")
            tools = engine_tools(
                declared.tools,
                loop=loop,
                event_call=ctx.event_call,
                session_id=str(session_id) if session_id else None,
            )
    return TurnAdditions(
        announced_tools=tuple(announced),
        tools=tools,
        artifacts=context,
        log_level=effective.log_level,
        update_char_limit=effective.update_char_limit,
        idle_flush_ms=float(effective.idle_flush_ms),
    )


def _needs_intake(item: Mapping[str, Any]) -> bool:
    content = item.get("content")
    if item.get("role") != "user" or not isinstance(content, list | tuple):
        return False
    return any(
        isinstance(part, Mapping)
        and part.get("type") in ("input_image", "input_file", "input_video")
        for part in content
    )


def _features(ctx: TurnContext) -> Mapping[str, Any]:
    features = ctx.metadata.get("features")
    return features if isinstance(features, Mapping) else {}


def _request_settings(valves: Valves, effective: EffectiveSettings) -> RequestSettings:
    return RequestSettings(
        # The user's reasoning, merged with the system's.
        enable_reasoning=effective.enable_reasoning,
        reasoning_effort=effective.reasoning_effort,
        reasoning_summary=effective.reasoning_summary,
        # Attachments.
        base64_max_bytes=valves.BASE64_MAX_SIZE_MB * 1024 * 1024,
        max_input_images=valves.MAX_INPUT_IMAGES_PER_REQUEST,
        image_selection=valves.IMAGE_INPUT_SELECTION,
        # Web search and output length.
        enable_web_search=valves.ENABLE_WEB_SEARCH_TOOL,
        web_search_force_models=valves.web_search_force_models(),
        web_search_max_results=valves.WEB_SEARCH_MAX_RESULTS,
        use_model_max_output_tokens=valves.USE_MODEL_MAX_OUTPUT_TOKENS,
    )
