"""One Open WebUI chat turn, from ``Pipe.pipe()``'s arguments to what Open WebUI reads.

asyncio-flavoured throughout (it runs on Open WebUI's loop). The Function
file (``owui_pipe.py``) only forwards its arguments here, so this module
can be imported, type-checked and tested like any other. It runs a turn;
what the turn sends is decided without I/O by ``turn_plan.plan_turn``.

1. Settings: the valves read **once** (Open WebUI swaps ``pipe.valves`` per
   dispatch), merged with the user's valves.
2. Guards, each with a message a person can act on, raised before anything
   streams (Open WebUI shows a ``pipe()`` exception as an error message):
   bad valves, no key, the user's breaker open, OpenRouter unreachable or
   the key rejected, an unknown or disabled model, the engine busy.
3. History: the chat's stored artifacts, loaded through the bridge next to
   the persister (``adapters.openwebui.history``), behind the user's DB breaker.
4. The plan: one ``ChatRequest``, built once, and the work around it; the
   attachments prepared (``turn_attachments``), the notices shown, the
   request submitted through the loop's bridge.
5. The answer (``answer_stream``): streamed chunks and events, or one string
   for a turn Open WebUI does not stream. However it ends, the request ends
   with it and the user's breaker hears how it went.

Crossings from asyncio into trio before the answer streams, for a chat with
stored history: two, the history read (the persister's barrier and the
artifact load in one trip) and ``submit``; the branch's first answer, a task
and a chat without a store: ``submit`` only. Forgetting replayed reasoning
happens after a good reply.

Task requests (titles, tags, follow-ups) take the same engine path but
return plain text, and a failure returns "" — Open WebUI then falls back
to its own default (for a title: the user's message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from orpipe.adapters.bridge import BridgedStream, EngineBridge, StoreFactory
from orpipe.adapters.openrouter.catalogue import Catalogue, CatalogueError, ModelInfo
from orpipe.adapters.openwebui.answer_renderer import AnswerRenderer
from orpipe.adapters.openwebui.answer_stream import AnswerStream, collect_answer
from orpipe.adapters.openwebui.events import notification_event
from orpipe.adapters.openwebui.generated_images import GeneratedImages
from orpipe.adapters.openwebui.history import (
    DEGRADED_NOTICE,
    artifact_context,
    forget_replayed,
    load_replay_plan,
    read_branch,
)
from orpipe.adapters.openwebui.model_registry import registry_for
from orpipe.adapters.openwebui.request import RequestMappingError
from orpipe.adapters.openwebui.runtime import BridgeTarget, PipeRuntime, runtime_for_loop
from orpipe.adapters.openwebui.safe_emitter import SafeEmitter
from orpipe.adapters.openwebui.turn_attachments import fetcher, file_store, prepare_attachments
from orpipe.adapters.openwebui.turn_context import PipeError, TurnContext
from orpipe.adapters.openwebui.turn_plan import (
    TurnHistory,
    TurnPlan,
    TurnSettings,
    choose_model,
    plan_turn,
)
from orpipe.adapters.openwebui.user_breaker import paused_message
from orpipe.adapters.openwebui.valves import UserValves, ValveError, Valves, effective_settings
from orpipe.adapters.openwebui.valves.engine_settings import (
    ledger_factory_for,
    store_factory_for,
    telemetry_service_for,
)
from orpipe.engine import (
    AdmissionRejected,
    Cancelled,
    EngineClosed,
    EngineCrashed,
    Failed,
    RequestDeadlineExceeded,
    UpstreamError,
)
from orpipe.engine.logs import LogSettings, register_secret

__all__ = ["AnswerStream", "PipeError", "TurnContext", "list_models", "run_turn"]

log = logging.getLogger("orpipe.owui")

#: Shown in the model list when the catalogue cannot be loaded, so an
#: administrator picking it reads why instead of seeing an empty list.
UNAVAILABLE_SUB_ID = "orpipe-unavailable"

#: The status of a turn whose DB work the user's DB breaker skipped.
DB_SKIPPED_STATUS = "DB ops skipped due to repeated errors"


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
        submitted = await _submit(settings, body, ctx, runtime=runtime, emitter=emitter)
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
        tool_names=submitted.plan.tool_names,
        tool_round=_tool_round(body),
        # A chat Open WebUI keeps finds its artifacts by message id: no text in the answer.
        write_references=not submitted.plan.keyed_by_branch,
    )
    images = GeneratedImages(
        store=file_store(valves, ctx, runtime),
        user=ctx.user or None,
        fetcher=fetcher(valves, ctx, runtime),
        max_bytes=valves.BASE64_MAX_SIZE_MB * 1024 * 1024,
    )

    def on_end(stream: BridgedStream) -> None:
        _record_outcome(runtime, user_id, stream)

    if ctx.task is not None or body.get("stream") is False:
        return await collect_answer(
            submitted.stream,
            renderer,
            emitter,
            task=ctx.task,
            images=images,
            on_end=on_end,
            after_success=submitted.after_success,
        )
    return AnswerStream(
        submitted.stream,
        renderer,
        emitter,
        images=images,
        on_end=on_end,
        after_success=submitted.after_success,
    )


async def _submit(
    settings: TurnSettings,
    body: Mapping[str, Any],
    ctx: TurnContext,
    *,
    runtime: PipeRuntime,
    emitter: SafeEmitter,
) -> _Submitted:
    """Catalogue, model, history, plan, attachments: the request in the engine, or PipeError."""
    valves = settings.valves
    catalogue = await _catalogue(valves, settings.api_key)
    model = choose_model(catalogue, valves, body, ctx)
    await _report_unknown_model_ids(catalogue, valves, ctx, emitter)
    store_factory, store_key = _store_for(valves, body, ctx)
    ledger_factory, ledger_key = ledger_factory_for(valves, pipe_id=_pipe_id(body, ctx))
    bridge = await runtime.bridge(
        BridgeTarget(
            config=settings.config,
            api_key=settings.api_key,
            transport_factory=ctx.transport_factory,
            store_factory=store_factory,
            store_key=store_key,
            side_service=telemetry_service_for(valves),
            ledger_factory=ledger_factory,
            ledger_key=ledger_key,
            kind=valves.ENGINE_BRIDGE,
            window_batches=valves.BRIDGE_WINDOW_BATCHES,
        )
    )
    history = TurnHistory(context=None)
    if store_factory is not None and ctx.task is None:  # titles and tags are not history
        history = await _history(
            settings, body, ctx, model, bridge=bridge, runtime=runtime, emitter=emitter
        )
    try:
        plan = plan_turn(settings, body, ctx, model, history, loop=asyncio.get_running_loop())
    except RequestMappingError as exc:
        raise PipeError(exc.message) from None
    if plan.dropped:
        log.debug("dropped unsupported body fields: %s", ", ".join(plan.dropped))
    for warning in plan.warnings:
        log.warning("replay: %s", warning)
    request = plan.request
    intake_notes: tuple[str, ...] = ()
    if plan.needs_intake:
        prepared = await prepare_attachments(valves, ctx, runtime, emitter, request.input)
        # The one rebuild a turn can need: the input with its files and links prepared.
        request, intake_notes = replace(request, input=prepared.input), prepared.notes
    for note in (*plan.mapping_notes, *intake_notes, *plan.tool_notes):
        await emitter.emit(notification_event("warning", note))
    try:
        stream = await bridge.submit(request)
    except AdmissionRejected as exc:
        # Busy is not the user's failure: the breaker does not count it.
        raise PipeError(exc.message) from None
    except (EngineClosed, EngineCrashed) as exc:
        raise PipeError(exc.message) from None
    return _Submitted(stream=stream, bridge=bridge, plan=plan)


async def _history(
    settings: TurnSettings,
    body: Mapping[str, Any],
    ctx: TurnContext,
    model: ModelInfo,
    *,
    bridge: EngineBridge,
    runtime: PipeRuntime,
    emitter: SafeEmitter,
) -> TurnHistory:
    """Where the answer's artifacts go, and the chat's artifacts, behind the user's DB breaker.

    While that breaker is open the turn does no DB work at all (no history
    loaded, this turn's artifacts not stored) and says so in a status; it
    half-opens after its cool-down and closes on one good load.
    """
    context = artifact_context(
        ctx.metadata,
        user_id=ctx.user_id,
        model_id=model.openrouter_id,
        reasoning=settings.effective.persist_reasoning,
        tool_results=settings.effective.persist_tool_results,
    )
    if context is None:
        return TurnHistory(context=None)
    user = ctx.user_id or "anonymous"
    decision = runtime.db_breaker.check(user)
    if not decision.allowed:
        await emitter.status(DB_SKIPPED_STATUS, done=True)
        return TurnHistory(context=None)
    messages = body.get("messages")
    loaded = await load_replay_plan(
        bridge,
        messages if isinstance(messages, list) else [],
        context,
        retention_turns=settings.valves.TOOL_OUTPUT_RETENTION_TURNS,
        branch=await read_branch(context.chat_id, context.message_id),
    )
    troubled = loaded.degraded or loaded.writes_failing
    if loaded.degraded:
        runtime.db_breaker.record_failure(user)
    else:
        runtime.db_breaker.record_success(user)
    if troubled and runtime.tell_degraded_once(user):
        await emitter.emit(notification_event("warning", DEGRADED_NOTICE))
    elif not troubled:
        runtime.storage_recovered(user)
    return TurnHistory(context, loaded)


@dataclass(frozen=True, slots=True)
class _Submitted:
    """A request in the engine, the plan it came from, and what to do once it ended well."""

    stream: BridgedStream
    bridge: EngineBridge
    plan: TurnPlan

    async def after_success(self) -> None:
        """Under retention next_reply: delete the reasoning this request replayed."""
        context = self.plan.request.artifacts
        if self.plan.forget and context is not None:
            await forget_replayed(self.bridge, context.chat_id, self.plan.forget)


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


def _settings(valves: Valves, ctx: TurnContext) -> TurnSettings:
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
    return TurnSettings(valves, api_key, config, effective)


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


async def _report_unknown_model_ids(
    catalogue: Catalogue, valves: Valves, ctx: TurnContext, emitter: SafeEmitter
) -> None:
    """MODEL_ID typos are told to administrators, never papered over with the whole list."""
    unknown = catalogue.select(valves.MODEL_ID).unknown
    if unknown and ctx.user.get("role") == "admin":
        listed = ", ".join(unknown)
        await emitter.emit(
            notification_event(
                "warning", f"MODEL_ID names models OpenRouter does not list: {listed}"
            )
        )


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
