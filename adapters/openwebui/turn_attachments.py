"""A turn's attachments, on Open WebUI's loop: its files, its downloads, the intake pass.

``prepare_attachments`` runs the intake pass (``adapters.openwebui.intake``)
over a planned request's input: Open WebUI's stored files inlined, links
fetched or vetted, under a status while it runs. ``file_store`` and
``fetcher`` are the turn's file store and downloader (the process's, for the
valves' limits, unless a test injected its own); generated images use them too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from orpipe.adapters.openwebui import intake
from orpipe.adapters.openwebui.downloader import DownloadLimits
from orpipe.adapters.openwebui.files import Owner, StoredFileError
from orpipe.adapters.openwebui.runtime import PipeRuntime
from orpipe.adapters.openwebui.safe_emitter import SafeEmitter
from orpipe.adapters.openwebui.turn_context import TurnContext
from orpipe.adapters.openwebui.valves import Valves

__all__ = ["fetcher", "file_store", "prepare_attachments"]

log = logging.getLogger("orpipe.owui")


async def prepare_attachments(
    valves: Valves,
    ctx: TurnContext,
    runtime: PipeRuntime,
    emitter: SafeEmitter,
    items: tuple[Mapping[str, Any], ...],
) -> intake.IntakeResult:
    """The intake pass (``openwebui.intake``): stored files inlined, links fetched or vetted.

    For an input the planner found stored files or links in (``TurnPlan.needs_intake``).
    """
    store = file_store(valves, ctx, runtime)
    owner: Owner | None = None
    rag_limit: int | None = None
    try:
        owner = await store.owner_for(ctx.user or None)
        rag_limit = await store.rag_file_limit_bytes()
    except StoredFileError as exc:
        # Links and inline data still work; Open WebUI's own files cannot be read.
        log.info("intake without Open WebUI's files: %s", exc.reason)
    inline_max = valves.BASE64_MAX_SIZE_MB * 1024 * 1024
    remote_max = min(
        intake.effective_remote_limit(valves.REMOTE_FILE_MAX_SIZE_MB, rag_limit), inline_max
    )
    attachments = intake.Intake(
        limits=intake.IntakeLimits(
            inline_max_bytes=inline_max,
            video_max_bytes=valves.VIDEO_MAX_SIZE_MB * 1024 * 1024,
            remote_max_bytes=remote_max,
            save_remote_file_urls=valves.SAVE_REMOTE_FILE_URLS,
            save_file_data_content=valves.SAVE_FILE_DATA_CONTENT,
            per_request=valves.REMOTE_DOWNLOADS_PER_REQUEST,
            allow_http_hosts=valves.insecure_http_hosts(),
            allow_loopback=ctx.allow_loopback,
        ),
        fetcher=fetcher(valves, ctx, runtime),
        store=store if owner is not None else None,
        owner=owner,
    )
    await emitter.status(_PREPARING_STATUS, done=False)
    try:
        prepared = await attachments.prepare(items)
    except BaseException:
        await emitter.close_statuses()  # no blank "hidden" entry: Open WebUI lists those
        raise
    await emitter.status(_PREPARING_STATUS, done=True)  # sent as "Attachments prepared"
    return prepared


_PREPARING_STATUS = "Preparing attachments…"


def file_store(valves: Valves, ctx: TurnContext, runtime: PipeRuntime) -> intake.FileStore:
    if ctx.files is not None:
        return ctx.files
    return runtime.files(
        valves.FALLBACK_STORAGE_EMAIL, valves.FALLBACK_STORAGE_NAME, valves.FALLBACK_STORAGE_ROLE
    )


def fetcher(valves: Valves, ctx: TurnContext, runtime: PipeRuntime) -> intake.UrlFetcher:
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
