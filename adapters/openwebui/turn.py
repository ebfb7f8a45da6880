"""One Open WebUI chat turn, from ``Pipe.pipe()``'s arguments to what Open WebUI reads.

asyncio-flavoured throughout (it runs on Open WebUI's loop). The Function
file (``owui_pipe.py``) only forwards its arguments here, so this module
can be imported, type-checked and tested like any other.

A turn:

1. Settings: the valves read **once** (Open WebUI swaps ``pipe.valves`` per
   dispatch), merged with the user's valves.
2. Guards, each with a message a person can act on, raised before anything
   streams (Open WebUI shows a ``pipe()`` exception as an error message):
   bad valves, no key, the user's breaker open, OpenRouter unreachable or
   the key rejected, an unknown or disabled model, the engine busy.
3. The request: the body mapped to a Responses request for the model's
   catalogue entry, submitted to the engine through the loop's bridge.
4. The answer: an async generator that carries all of it over HTTP (text,
   reasoning as Open WebUI's thinking block, usage, errors) and mirrors
   progress through the event emitter: statuses only for what the thinking
   block and the text cannot say (waiting on OpenRouter, web searches, tool
   calls), ended by the final status line (``adapters.openwebui.events``). Its
   ``finally`` cancels the request if it is still running (Open WebUI's stop
   button cancels the task that iterates it) and ends a status line still
   open.

Task requests (titles, tags, follow-ups) take the same engine path but
return plain text, and a failure returns "" — Open WebUI then falls back
to its own default (for a title: the user's message).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from orpipe.adapters.bridge import (
    BridgedStream,
    EngineBridge,
    StoreFactory,
    TransportFactory,
)
from orpipe.adapters.openwebui.downloader import DownloadLimits
from orpipe.adapters.openwebui.events import AnswerRenderer, SafeEmitter, log_source_event
from orpipe.adapters.openwebui.files import Owner, StoredFileError
from orpipe.adapters.openwebui.generated_images import GeneratedImages
from orpipe.adapters.openwebui.history import (
    DEGRADED_NOTICE,
    Loaded,
    artifact_context,
    forget_replayed,
    load_replay_plan,
    read_branch,
)
from orpipe.adapters.openwebui.intake import (
    FileStore,
    Intake,
    IntakeLimits,
    IntakeResult,
    UrlFetcher,
    effective_remote_limit,
)
from orpipe.adapters.openwebui.models import (
    Catalogue,
    CatalogueError,
    ModelInfo,
    registry_for,
)
from orpipe.adapters.openwebui.request import RequestMappingError, RequestSettings, build_request
from orpipe.adapters.openwebui.runtime import BridgeTarget, PipeRuntime, runtime_for_loop
from orpipe.adapters.openwebui.tool_specs import ToolDeclarations, declare_tools, function_spec
from orpipe.adapters.openwebui.tools import EventCall, engine_tools
from orpipe.adapters.openwebui.user_breaker import paused_message
from orpipe.adapters.openwebui.valves import (
    EffectiveSettings,
    UserValves,
    ValveError,
    Valves,
    effective_settings,
)
from orpipe.adapters.openwebui.valves.engine_settings import store_factory_for
from orpipe.engine import (
    AdmissionRejected,
    Cancelled,
    ChatRequest,
    Completed,
    EngineClosed,
    EngineConfig,
    EngineCrashed,
    Failed,
    Incomplete,
    OutboundEvent,
    ReasoningDelta,
    RequestDeadlineExceeded,
    TextDelta,
    UpstreamError,
)
from orpipe.engine.artifacts import ArtifactContext
from orpipe.engine.logs import LogSettings, register_secret, request_logs

__all__ = ["AnswerStream", "PipeError", "TurnContext", "list_models", "run_turn"]

log = logging.getLogger("orpipe.owui")

Emitter = Callable[[dict[str, Any]], Awaitable[None]]

#: Shown in the model list when the catalogue cannot be loaded, so an
#: administrator picking it reads why instead of seeing an empty list.
UNAVAILABLE_SUB_ID = "orpipe-unavailable"

#: Bound on the awaits a generator's ``finally`` makes toward Open WebUI.
_CLEANUP_S = 2.0


class PipeError(Exception):
    """A turn refused before streaming; Open WebUI shows the message as an error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnContext:
    """The reserved arguments of one ``pipe()`` call that this module uses."""

    user: Mapping[str, Any]
    metadata: Mapping[str, Any]
    emitter: Emitter | None = None
    task: str | None = None
    #: ``__tools__``: the tools the user enabled for this chat (contract §2.5.1).
    tools: Mapping[str, Any] | None = None
    #: ``__event_call__``: how direct (browser-side) tools are reached.
    event_call: EventCall | None = None
    #: Tests inject a fault-injecting transport; None = the real OpenRouter.
    transport_factory: TransportFactory | None = None
    #: Tests inject an artifact store; None = the one the valves describe.
    store_factory: StoreFactory | None = None
    #: Open WebUI's files for the intake pass; None = Open WebUI's own (``OwuiFiles``).
    files: FileStore | None = None
    #: Remote downloads; None = the process's ``Downloader`` for the valves' limits.
    downloader: UrlFetcher | None = None
    #: Tests only: video links to a loopback server pass the SSRF vetting.
    allow_loopback: bool = False

    @property
    def user_id(self) -> str | None:
        uid = self.user.get("id") or self.metadata.get("user_id")
        return str(uid) if uid else None


# -- the model list ---------------------------------------------------------------


async def list_models(valves: Valves) -> list[dict[str, str]]:
    """``pipes()``: the models MODEL_ID selects, or one entry that says what is wrong."""
    try:
        api_key = valves.api_key()
    except ValveError as exc:
        return [_unavailable(exc.message)]
    if not api_key:
        return [_unavailable("set the API_KEY valve")]
    registry = registry_for(
        valves.BASE_URL, api_key, ttl_s=float(valves.MODEL_CATALOG_REFRESH_SECONDS)
    )
    try:
        catalogue = await registry.get()
    except CatalogueError as exc:
        log.warning("model list unavailable: %s", exc.message)
        return [_unavailable(exc.message)]
    selection = catalogue.select(valves.MODEL_ID)
    if selection.unknown:
        log.warning(
            "MODEL_ID names models OpenRouter does not list: %s", ", ".join(selection.unknown)
        )
    return [{"id": m.sub_id, "name": m.name} for m in selection.models]


def _unavailable(reason: str) -> dict[str, str]:
    return {"id": UNAVAILABLE_SUB_ID, "name": f"OpenRouter unavailable: {reason}"}


# -- a chat turn ------------------------------------------------------------------


async def run_turn(
    valves: Valves, body: Mapping[str, Any], ctx: TurnContext
) -> str | AsyncGenerator[dict[str, Any], None]:
    """Everything ``pipe()`` does; raises ``PipeError`` for a turn refused up front."""
    emitter = SafeEmitter(ctx.emitter)
    settings = _settings(valves, ctx)
    runtime = runtime_for_loop()
    user_id = ctx.user_id or "anonymous"

    breaker = runtime.configure_breaker(valves.BREAKER_MAX_FAILURES, valves.BREAKER_WINDOW_SECONDS)
    decision = breaker.check(user_id)
    if not decision.allowed:
        raise PipeError(paused_message(decision.retry_after_s))
    try:
        submitted = await _submit(valves, body, ctx, settings, runtime=runtime, emitter=emitter)
    except BaseException:
        # Refused before it reached OpenRouter (busy, no such model, ...): that
        # says nothing about this user's requests, but frees a half-open trial.
        breaker.record_abandoned(user_id)
        raise
    model_field = body.get("model")
    renderer = AnswerRenderer(
        show_final_status=settings.effective.show_final_status,
        model=model_field if isinstance(model_field, str) else "orpipe",
        tool_calls_to_owui=valves.TOOL_EXECUTION_MODE == "open-webui",
        tool_names=submitted.tool_names,
        tool_round=_tool_round(body),
        # A chat Open WebUI keeps finds its artifacts by message id: no text in the answer.
        write_references=not submitted.keyed_by_branch,
    )
    images = GeneratedImages(
        store=_file_store(valves, ctx, runtime),
        user=ctx.user or None,
        fetcher=_fetcher(valves, ctx, runtime),
        max_bytes=valves.BASE64_MAX_SIZE_MB * 1024 * 1024,
    )
    stream = submitted.stream
    if ctx.task is not None or body.get("stream") is False:
        return await _collect(
            submitted, renderer, emitter, runtime, user_id, task=ctx.task, images=images
        )
    return AnswerStream(
        stream,
        renderer,
        emitter,
        images=images,
        on_end=lambda ended: _record_outcome(runtime, user_id, ended),
        after_success=submitted.after_success,
    )


async def _submit(
    valves: Valves,
    body: Mapping[str, Any],
    ctx: TurnContext,
    settings: _Settings,
    *,
    runtime: PipeRuntime,
    emitter: SafeEmitter,
) -> _Submitted:
    """Catalogue, model, history, mapping, bridge: the request in the engine, or PipeError."""
    catalogue = await _catalogue(valves, settings.api_key)
    model = _model_for(catalogue, valves, body, ctx)
    await _report_unknown_model_ids(catalogue, valves, ctx, emitter)
    store_factory, store_key = _store_for(valves, body, ctx)
    bridge = await runtime.bridge(
        BridgeTarget(
            config=settings.config,
            api_key=settings.api_key,
            kind=valves.ENGINE_BRIDGE,
            window_batches=valves.BRIDGE_WINDOW_BATCHES,
            transport_factory=ctx.transport_factory,
            store_factory=store_factory,
            store_key=store_key,
        )
    )
    context = None
    loaded = Loaded(plan=None)
    if store_factory is not None and ctx.task is None:  # titles and tags are not history
        context = artifact_context(
            ctx.metadata,
            user_id=ctx.user_id,
            model_id=model.openrouter_id,
            reasoning=settings.effective.persist_reasoning,
            tool_results=settings.effective.persist_tool_results,
        )
    if context is not None:
        context, loaded = await _history(
            valves, body, ctx, context, bridge=bridge, runtime=runtime, emitter=emitter
        )
    passthrough = valves.TOOL_EXECUTION_MODE == "open-webui"
    if context is not None and passthrough:
        # Open WebUI keeps the calls and results it ran in its own history.
        context = replace(context, function_calls=False)
    declared = _declared_tools(valves, ctx, model)
    if loaded.messages is not None:  # the branch's artifacts placed, in memory only
        body = {**body, "messages": list(loaded.messages)}
    try:
        mapped = build_request(
            body,
            model=model,
            settings=_request_settings(valves, settings.effective),
            features=_features(ctx),
            user_id=ctx.user_id,
            replay=loaded.plan,
            owui_tool_calls=passthrough,
            # An API client's own tools come in the body; a chat's come in __tools__
            # (and again in the body, which is then not read, so none is announced twice).
            supports_tools=(model.tools if passthrough and _no_chat_tools(ctx) else None),
            strict_tools=valves.ENABLE_STRICT_TOOL_CALLING,
            tool_names=declared.renamed,
        )
    except RequestMappingError as exc:
        raise PipeError(exc.message) from None
    if mapped.dropped:
        log.debug("dropped unsupported body fields: %s", ", ".join(mapped.dropped))
    for warning in mapped.warnings:
        log.warning("replay: %s", warning)
    prepared = await _prepare_attachments(valves, ctx, runtime, emitter, mapped.request.input)
    request = replace(
        mapped.request,
        input=prepared.input,
        # The user's own LOG_LEVEL, for this request's records only.
        log_level=settings.effective.log_level,
        update_char_limit=settings.effective.update_char_limit,
        idle_flush_ms=float(settings.effective.idle_flush_ms),
        artifacts=context,
    )
    request = _with_tools(request, valves, ctx, model, declared)
    tool_notes = declared.notes
    for note in (*mapped.notes, *prepared.notes, *tool_notes):
        await emitter.emit({"type": "notification", "data": {"type": "warning", "content": note}})
    try:
        stream = await bridge.submit(request)
    except AdmissionRejected as exc:
        # Busy is not the user's failure: the breaker does not count it.
        raise PipeError(exc.message) from None
    except (EngineClosed, EngineCrashed) as exc:
        raise PipeError(exc.message) from None
    forget: tuple[str, ...] = ()
    if context is not None and context.reasoning == "next_reply":
        forget = mapped.replayed_reasoning_ids
    return _Submitted(
        stream=stream,
        bridge=bridge,
        context=context,
        forget=forget,
        tool_names=mapped.tool_names,
        keyed_by_branch=loaded.messages is not None,
    )


async def _prepare_attachments(
    valves: Valves,
    ctx: TurnContext,
    runtime: PipeRuntime,
    emitter: SafeEmitter,
    items: tuple[Mapping[str, Any], ...],
) -> IntakeResult:
    """The intake pass (``openwebui.intake``): stored files inlined, links fetched or vetted."""
    if not any(_needs_intake(item) for item in items):
        return IntakeResult(tuple(dict(item) for item in items))
    store = _file_store(valves, ctx, runtime)
    owner: Owner | None = None
    rag_limit: int | None = None
    try:
        owner = await store.owner_for(ctx.user or None)
        rag_limit = await store.rag_file_limit_bytes()
    except StoredFileError as exc:
        # Links and inline data still work; Open WebUI's own files cannot be read.
        log.info("intake without Open WebUI's files: %s", exc.reason)
    inline_max = valves.BASE64_MAX_SIZE_MB * 1024 * 1024
    remote_max = min(effective_remote_limit(valves.REMOTE_FILE_MAX_SIZE_MB, rag_limit), inline_max)
    intake = Intake(
        limits=IntakeLimits(
            inline_max_bytes=inline_max,
            video_max_bytes=valves.VIDEO_MAX_SIZE_MB * 1024 * 1024,
            remote_max_bytes=remote_max,
            save_remote_file_urls=valves.SAVE_REMOTE_FILE_URLS,
            save_file_data_content=valves.SAVE_FILE_DATA_CONTENT,
            per_request=valves.REMOTE_DOWNLOADS_PER_REQUEST,
            allow_http_hosts=valves.insecure_http_hosts(),
            allow_loopback=ctx.allow_loopback,
        ),
        fetcher=_fetcher(valves, ctx, runtime),
        store=store if owner is not None else None,
        owner=owner,
    )
    await emitter.status(_PREPARING_STATUS, done=False)
    try:
        prepared = await intake.prepare(items)
    except BaseException:
        await emitter.close_statuses()  # no blank "hidden" entry: Open WebUI lists those
        raise
    await emitter.status(_PREPARING_STATUS, done=True)  # sent as "Attachments prepared"
    return prepared


_PREPARING_STATUS = "Preparing attachments…"


def _file_store(valves: Valves, ctx: TurnContext, runtime: PipeRuntime) -> FileStore:
    if ctx.files is not None:
        return ctx.files
    return runtime.files(
        valves.FALLBACK_STORAGE_EMAIL, valves.FALLBACK_STORAGE_NAME, valves.FALLBACK_STORAGE_ROLE
    )


def _fetcher(valves: Valves, ctx: TurnContext, runtime: PipeRuntime) -> UrlFetcher:
    """The process's downloader; each download may ask for a lower size limit."""
    if ctx.downloader is not None:
        return ctx.downloader
    return runtime.downloader(
        DownloadLimits(
            max_bytes=valves.BASE64_MAX_SIZE_MB * 1024 * 1024,
            attempt_timeout_s=float(valves.REMOTE_DOWNLOAD_TIMEOUT_SECONDS),
            total_budget_s=float(valves.REMOTE_DOWNLOAD_MAX_RETRY_TIME_SECONDS),
            max_retries=valves.REMOTE_DOWNLOAD_MAX_RETRIES,
            backoff_initial_s=float(valves.REMOTE_DOWNLOAD_INITIAL_RETRY_DELAY_SECONDS),
            backoff_max_s=float(valves.REMOTE_DOWNLOAD_MAX_RETRY_TIME_SECONDS),
            retry_after_cap_s=float(valves.REMOTE_DOWNLOAD_RETRY_AFTER_CAP_SECONDS),
            max_redirects=valves.REMOTE_DOWNLOAD_MAX_REDIRECTS,
            allow_http_hosts=valves.insecure_http_hosts(),
        ),
        valves.REMOTE_DOWNLOADS_GLOBAL,
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


def _with_tools(
    request: ChatRequest,
    valves: Valves,
    ctx: TurnContext,
    model: ModelInfo,
    declared: ToolDeclarations,
) -> ChatRequest:
    """The request with the chat's tools and the MCP servers attached.

    Engine mode: each Open WebUI tool becomes an engine ``Tool`` run on Open
    WebUI's loop (``adapters.openwebui.tools``). Pass-through mode: the tools are
    only announced; the model's calls go back to Open WebUI as
    ``delta.tool_calls``. Titles, tags and other tasks never get tools.
    """
    if ctx.task is not None:
        return request
    servers = valves.mcp_servers() if model.tools else ()
    announced: list[dict[str, Any]] = [dict(server) for server in servers]
    tools = None
    if valves.TOOL_EXECUTION_MODE == "open-webui":
        announced += [function_spec(tool) for tool in declared.tools]
    elif declared.tools:
        tools = engine_tools(
            declared.tools,
            loop=asyncio.get_running_loop(),
            event_call=ctx.event_call,
            session_id=_str_or_none(ctx.metadata.get("session_id")),
        )
    options = dict(request.options)
    if announced:
        options["tools"] = [*options.get("tools", ()), *announced]
    return replace(request, options=options, tools=tools)


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


async def _history(
    valves: Valves,
    body: Mapping[str, Any],
    ctx: TurnContext,
    context: ArtifactContext,
    *,
    bridge: EngineBridge,
    runtime: PipeRuntime,
    emitter: SafeEmitter,
) -> tuple[ArtifactContext | None, Loaded]:
    """Load the chat's artifacts, behind the user's DB breaker.

    While that breaker is open the turn does no DB work at all (no history
    loaded, this turn's artifacts not stored) and says so in a status; it
    half-opens after its cool-down and closes on one good load.
    """
    user = ctx.user_id or "anonymous"
    decision = runtime.db_breaker.check(user)
    if not decision.allowed:
        await emitter.status(DB_SKIPPED_STATUS, done=True)
        return None, Loaded(plan=None)
    messages = body.get("messages")
    loaded = await load_replay_plan(
        bridge,
        messages if isinstance(messages, list) else [],
        context,
        retention_turns=valves.TOOL_OUTPUT_RETENTION_TURNS,
        branch=await read_branch(context.chat_id, context.message_id),
    )
    if loaded.degraded:
        runtime.db_breaker.record_failure(user)
    else:
        runtime.db_breaker.record_success(user)
    if (loaded.degraded or loaded.writes_failing) and runtime.tell_degraded_once(user):
        await emitter.emit(
            {"type": "notification", "data": {"type": "warning", "content": DEGRADED_NOTICE}}
        )
    elif not (loaded.degraded or loaded.writes_failing):
        runtime.storage_recovered(user)
    return context, loaded


#: The status of a turn whose DB work the user's DB breaker skipped.
DB_SKIPPED_STATUS = "DB ops skipped due to repeated errors"


@dataclass(frozen=True, slots=True)
class _Submitted:
    """A request in the engine, and what to do once it has ended well."""

    stream: BridgedStream
    bridge: EngineBridge
    context: ArtifactContext | None
    #: Replayed reasoning to delete after a successful reply (retention next_reply).
    forget: tuple[str, ...]
    #: Pass-through: announced tool name → Open WebUI's own name, where they differ.
    tool_names: Mapping[str, str] = field(default_factory=dict)
    #: The chat is one Open WebUI keeps: the next turn finds this answer's
    #: artifacts by its message id, so the answer carries no reference lines.
    keyed_by_branch: bool = False

    async def after_success(self) -> None:
        if self.forget and self.context is not None:
            await forget_replayed(self.bridge, self.context.chat_id, self.forget)


def _store_for(
    valves: Valves, body: Mapping[str, Any], ctx: TurnContext
) -> tuple[StoreFactory | None, object]:
    if ctx.store_factory is not None:
        return ctx.store_factory, None
    return store_factory_for(valves, pipe_id=_pipe_id(body, ctx))


def _pipe_id(body: Mapping[str, Any], ctx: TurnContext) -> str:
    """The Function's id: the part of the model id before the first dot (contract §6)."""
    model = body.get("model")
    if not isinstance(model, str) or "." not in model:
        meta = ctx.metadata.get("model")
        model = meta.get("id") if isinstance(meta, Mapping) else None
    if isinstance(model, str) and "." in model:
        return model.split(".", 1)[0]
    return "orpipe"


@dataclass(frozen=True, slots=True)
class _Settings:
    api_key: str
    config: EngineConfig
    effective: EffectiveSettings


def _settings(valves: Valves, ctx: TurnContext) -> _Settings:
    try:
        api_key = valves.api_key()
        config = valves.engine_config()
    except ValveError as exc:
        raise PipeError(exc.message) from None
    if not api_key:
        raise PipeError(
            "No OpenRouter API key is set. An administrator must paste one into the "
            "API_KEY valve of this Function (Admin → Functions → the gear icon)."
        )
    # Whatever happens next, these values never reach a log line.
    register_secret(api_key)
    with contextlib.suppress(ValveError):
        register_secret(valves.artifact_key())
    runtime_for_loop().use_logging(
        LogSettings(level=valves.LOG_LEVEL, ring_lines=valves.SESSION_LOG_MAX_LINES)
    )
    effective = effective_settings(valves, _user_valves(ctx))
    for problem in effective.problems:
        log.warning("user valves ignored: %s", problem)
    return _Settings(api_key=api_key, config=config, effective=effective)


def _user_valves(ctx: TurnContext) -> UserValves | Mapping[str, Any] | None:
    valves = ctx.user.get("valves")
    if isinstance(valves, UserValves | Mapping):
        return valves
    # Another class of the same shape (the Function's module was re-executed).
    dump = getattr(valves, "model_dump", None)
    return dump() if callable(dump) else None


async def _catalogue(valves: Valves, api_key: str) -> Catalogue:
    registry = registry_for(
        valves.BASE_URL, api_key, ttl_s=float(valves.MODEL_CATALOG_REFRESH_SECONDS)
    )
    try:
        if registry.fetched_at is None:
            await registry.warm_up()
        return await registry.get()
    except CatalogueError as exc:
        raise PipeError(exc.message) from None


def _model_for(
    catalogue: Catalogue, valves: Valves, body: Mapping[str, Any], ctx: TurnContext
) -> ModelInfo:
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


async def _report_unknown_model_ids(
    catalogue: Catalogue, valves: Valves, ctx: TurnContext, emitter: SafeEmitter
) -> None:
    """MODEL_ID typos are told to administrators, never papered over with the whole list."""
    unknown = catalogue.select(valves.MODEL_ID).unknown
    if unknown and ctx.user.get("role") == "admin":
        await emitter.emit(
            {
                "type": "notification",
                "data": {
                    "type": "warning",
                    "content": "MODEL_ID names models OpenRouter does not list: "
                    + ", ".join(unknown),
                },
            }
        )


def _features(ctx: TurnContext) -> Mapping[str, Any]:
    features = ctx.metadata.get("features")
    return features if isinstance(features, Mapping) else {}


def _request_settings(valves: Valves, effective: EffectiveSettings) -> RequestSettings:
    return RequestSettings(
        enable_reasoning=effective.enable_reasoning,
        reasoning_effort=effective.reasoning_effort,
        reasoning_summary=effective.reasoning_summary,
        use_model_max_output_tokens=valves.USE_MODEL_MAX_OUTPUT_TOKENS,
        enable_web_search=valves.ENABLE_WEB_SEARCH_TOOL,
        web_search_force_models=valves.web_search_force_models(),
        web_search_max_results=valves.WEB_SEARCH_MAX_RESULTS,
        max_input_images=valves.MAX_INPUT_IMAGES_PER_REQUEST,
        image_selection=valves.IMAGE_INPUT_SELECTION,
        base64_max_bytes=valves.BASE64_MAX_SIZE_MB * 1024 * 1024,
    )


# -- the answer -------------------------------------------------------------------


class AnswerStream(collections.abc.AsyncGenerator[dict[str, Any], None]):
    """The streamed answer: chunks for Open WebUI's HTTP stream, events for its socket.

    An async generator as far as Open WebUI can tell (it checks
    ``isinstance(result, AsyncGenerator)``), written as a class so that the
    request is ended however the answer stops being read: read to the end,
    ``aclose()`` (even before the first item), the consuming task cancelled
    (Open WebUI's stop button), an error, or the object dropped unread (its
    ``__del__`` cancels the request; the engine deadline bounds the rest).
    """

    def __init__(
        self,
        stream: BridgedStream,
        renderer: AnswerRenderer,
        emitter: SafeEmitter,
        *,
        images: GeneratedImages,
        on_end: Callable[[BridgedStream], None],
        after_success: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._stream = stream
        self._emitter = emitter
        self._on_end = on_end
        self._after_success = after_success
        self._chunks = _chunks(stream, renderer, emitter, images)
        self._finished = False

    async def asend(self, value: None) -> dict[str, Any]:
        try:
            return await self._chunks.asend(value)
        except BaseException:
            await self._finish()  # the end, an error, or cancellation of the reader
            raise

    async def athrow(self, *args: Any) -> dict[str, Any]:
        try:
            return await self._chunks.athrow(*args)
        except BaseException:
            await self._finish()
            raise

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            await self._finish()

    def __del__(self) -> None:
        if not self._finished:
            self._stream.cancel("the answer was dropped without being read")

    async def _finish(self) -> None:
        """Once: end the request (cancel if still running), tell the breaker, tidy the UI."""
        if self._finished:
            return
        self._finished = True
        await self._stream.aclose()  # immediate: cancels in the engine if not ended
        self._on_end(self._stream)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLEANUP_S):
                await _hand_over_log(self._emitter, self._stream)
                await self._emitter.close_statuses()
                if self._after_success is not None and _succeeded(self._stream):
                    await self._after_success()


async def _chunks(
    stream: BridgedStream, renderer: AnswerRenderer, emitter: SafeEmitter, images: GeneratedImages
) -> AsyncGenerator[dict[str, Any], None]:
    for out in renderer.opening():  # "Waiting for OpenRouter…" until the first event
        await emitter.emit(out.event)
    while batch := await stream.receive_batch():
        for event in merged_deltas(batch):
            for out in renderer.feed(await images.shown(event)):
                if out.chunk is not None:
                    yield out.chunk
                else:
                    await emitter.emit(out.event)


def merged_deltas(batch: Sequence[OutboundEvent]) -> list[OutboundEvent]:
    """Adjacent deltas of the same kind as one: Open WebUI pays per chunk, not per character.

    A batch holds several runs when the reader fell behind (many chats at
    once, flat-out streams); what the user reads is the same text.
    """
    merged: list[OutboundEvent] = []
    for event in batch:
        last = merged[-1] if merged else None
        if type(event) in _DELTAS and type(last) is type(event):
            merged[-1] = replace(last, text=last.text + event.text)  # type: ignore[arg-type, union-attr]
        else:
            merged.append(event)
    return merged


_DELTAS = (TextDelta, ReasoningDelta)


def _tool_round(body: Mapping[str, Any]) -> int:
    """Which of Open WebUI's calls for this message this is: 1, or 2, 3, … after its
    tool runs (pass-through mode, contract §2.8): one more for each assistant
    message with ``tool_calls`` after the last user message."""
    messages = body.get("messages")
    rounds = 1
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, Mapping) or message.get("role") == "user":
            break
        if message.get("role") == "assistant" and message.get("tool_calls"):
            rounds += 1
    return rounds


async def _hand_over_log(emitter: SafeEmitter, stream: BridgedStream) -> None:
    """A failed answer carries its request's log lines as a source; either way the ring
    lets go of the request (it is bounded anyway, this keeps it small)."""
    ring = request_logs()
    lines = ring.lines(stream.request_id)
    ring.forget(stream.request_id)
    if isinstance(stream.ending, Failed) and lines:
        await emitter.emit(log_source_event(stream.request_id, lines))


def _succeeded(stream: BridgedStream) -> bool:
    return isinstance(stream.ending, Completed | Incomplete)


async def _collect(
    submitted: _Submitted,
    renderer: AnswerRenderer,
    emitter: SafeEmitter,
    runtime: PipeRuntime,
    user_id: str,
    *,
    task: str | None,
    images: GeneratedImages,
) -> str:
    """A non-streaming turn: the same events, the answer returned as one string."""
    stream = submitted.stream
    try:
        while batch := await stream.receive_batch():
            for event in batch:
                for out in renderer.feed(await images.shown(event)):
                    if out.chunk is None and task is None:
                        await emitter.emit(out.event)
    finally:
        _record_outcome(runtime, user_id, stream)
        await stream.aclose()
        if task is None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLEANUP_S):
                    await _hand_over_log(emitter, stream)
                    await emitter.close_statuses()
                    if _succeeded(stream):
                        await submitted.after_success()
        else:
            request_logs().forget(stream.request_id)
    if isinstance(stream.ending, Failed):
        if task is not None:
            log.warning("task %s failed: %s", task, stream.ending.message)
            return ""
        raise PipeError(stream.ending.message)
    return renderer.content_text if task is None else renderer.answer_text


def _record_outcome(runtime: PipeRuntime, user_id: str, stream: BridgedStream) -> None:
    """Feed the user's breaker: only real upstream failures count against a user."""
    ending = stream.ending
    breaker = runtime.breaker
    if isinstance(ending, Failed):
        if isinstance(ending.error, UpstreamError | RequestDeadlineExceeded):
            breaker.record_failure(user_id)
        else:
            breaker.record_abandoned(user_id)
    elif ending is None or isinstance(ending, Cancelled):
        breaker.record_abandoned(user_id)
    else:
        breaker.record_success(user_id)
