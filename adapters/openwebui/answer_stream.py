"""The answer of a submitted turn, read from the bridge and handed to Open WebUI.

``AnswerStream`` is what ``pipe()`` returns for a streamed chat: chunks for
Open WebUI's HTTP stream, events for its socket (``AnswerRenderer`` decides
which). ``collect_answer`` reads the same events for a turn Open WebUI does
not stream (tasks such as titles, ``stream: false``) and returns the text.
Either way the request ends however reading stops: read to the end,
closed, the reading task cancelled (Open WebUI's stop button), an error, or
the answer dropped unread. Then, bounded by ``_CLEANUP_S``, a failed
request's log lines go under the answer, open statuses are closed, and a
successful reply's after-work runs (forgetting replayed reasoning).
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from orpipe.adapters.bridge import BridgedStream
from orpipe.adapters.openwebui.answer_renderer import AnswerRenderer
from orpipe.adapters.openwebui.events import log_source_event
from orpipe.adapters.openwebui.generated_images import GeneratedImages
from orpipe.adapters.openwebui.safe_emitter import SafeEmitter
from orpipe.adapters.openwebui.turn_context import PipeError
from orpipe.engine import Completed, Failed, Incomplete, OutboundEvent, ReasoningDelta, TextDelta
from orpipe.engine.logs import request_logs

__all__ = ["AnswerStream", "collect_answer", "merged_deltas"]

log = logging.getLogger("orpipe.owui")

#: Bound on the awaits a generator's ``finally`` makes toward Open WebUI.
_CLEANUP_S = 2.0


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
        await _tidy_up(self._emitter, self._stream, self._after_success)


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


async def collect_answer(
    stream: BridgedStream,
    renderer: AnswerRenderer,
    emitter: SafeEmitter,
    *,
    task: str | None,
    images: GeneratedImages,
    on_end: Callable[[BridgedStream], None],
    after_success: Callable[[], Awaitable[None]],
) -> str:
    """A non-streaming turn: the same events, the answer returned as one string.

    A task (title, tags, ...) shows nothing in the chat and returns "" when it
    fails (Open WebUI then uses its own default); a chat raises ``PipeError``.
    """
    try:
        while batch := await stream.receive_batch():
            for event in batch:
                for out in renderer.feed(await images.shown(event)):
                    if out.chunk is None and task is None:
                        await emitter.emit(out.event)
    finally:
        on_end(stream)
        await stream.aclose()
        if task is None:
            await _tidy_up(emitter, stream, after_success)
        else:
            request_logs().forget(stream.request_id)
    if isinstance(stream.ending, Failed):
        if task is not None:
            log.warning("task %s failed: %s", task, stream.ending.message)
            return ""
        raise PipeError(stream.ending.message)
    return renderer.content_text if task is None else renderer.answer_text


async def _tidy_up(
    emitter: SafeEmitter,
    stream: BridgedStream,
    after_success: Callable[[], Awaitable[None]] | None,
) -> None:
    """After the request ended, bounded and never raising: a failed request's log under
    the answer, open statuses closed, a successful reply's after-work."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_CLEANUP_S):
            await _hand_over_log(emitter, stream)
            await emitter.close_statuses()
            if after_success is not None and _succeeded(stream):
                await after_success()
