"""Mock OpenRouter: a real HTTP server on loopback (hypercorn's trio worker + a small ASGI app).

This module owns *how* the mock talks HTTP: routing (``/api/v1/responses``, ``/api/v1/models``,
``/api/v1/chat/completions``, ``/mock/stats``, ``/mock/requests``), auth, SSE framing and
batching, pacing, keep-alive comments, fault injection on the wire (drop, stall, bad events),
disconnect handling, the server's counters and its log of recent requests. *What* is sent is
decided by ``bench.mock_scenarios.plan`` so tests can predict it.

``/api/v1/chat/completions`` streams the same plan in the Chat Completions shape (one
``chat.completion.chunk`` per text delta, the same pacing, a last chunk with
``finish_reason`` and one with ``usage``, as OpenRouter ends its streams), for clients that
speak only that API, such as Open WebUI's own OpenAI connection (``CHAT_SCENARIOS``).
Bench variants (``--variant d20=tokens=200&tps=50``) add models ``mock/text:d20`` to the
catalogue whose requests get those parameters, for clients that can only pick a model.

Public API: ``serve_mock`` (trio), ``MockServer``, ``MockStats``, ``summarize_input``, and
the CLI ``python -m bench.mock_openrouter --port N [--host H] [--api-key K] [--param tps=25]
[--variant NAME=tokens=200&tps=50]``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final
from urllib.parse import parse_qs

import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from orpipe.bench.mock_scenarios import (
    CATALOGUE,
    CHAT_SCENARIOS,
    PARAM_PREFIX,
    FunctionCall,
    ParamError,
    ScenarioError,
    ScenarioPlan,
    error_envelope,
    parse_params,
    parse_variant,
    plan,
    resolve_scenario,
    variant_models,
    variant_of,
)

Message = dict[str, Any]
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_PREFIX: Final = "/api/v1"
KEEPALIVE: Final = b": OPENROUTER PROCESSING\n\n"
DONE: Final = b"data: [DONE]\n\n"
#: Longest silence (seconds) before a keep-alive comment is written during a slow stream.
KEEPALIVE_GAP: Final = 1.0
#: How many requests ``/mock/requests`` remembers (the newest).
RECENT_REQUESTS: Final = 200
#: Longest text kept per input item in ``/mock/requests`` (characters).
SUMMARY_TEXT_CHARS: Final = 400

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


# --------------------------------------------------------------------------------------------
# Stats and the handle returned to callers
# --------------------------------------------------------------------------------------------


@dataclass
class MockStats:
    """Counters of one server. Mutated only from the server's trio tasks."""

    requests_total: int = 0
    requests_by_scenario: dict[str, int] = field(default_factory=dict)
    streams_active: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    events_sent_total: int = 0
    bytes_sent_total: int = 0
    #: response id -> events written so far, for streams still open.
    active_stream_events: dict[str, int] = field(default_factory=dict)
    #: Content parts of the input messages received, by type ("input_image", ...), and how
    #: many of those parts carried their data inline (a ``data:`` URL or base64), so a
    #: test of attachments can see what reached "OpenRouter".
    input_parts_by_type: dict[str, int] = field(default_factory=dict)
    input_parts_inline: int = 0
    #: The newest requests, oldest first, as ``/mock/requests`` serves them: what each one
    #: carried (``summarize_input``) and which output items the mock answered with, so a
    #: test can check what a client replays on its next turn.
    recent_requests: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=RECENT_REQUESTS)
    )

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "requests_by_scenario": dict(self.requests_by_scenario),
            "streams_active": self.streams_active,
            "streams_completed": self.streams_completed,
            "streams_disconnected": self.streams_disconnected,
            "events_sent_total": self.events_sent_total,
            "bytes_sent_total": self.bytes_sent_total,
            "active_stream_events": dict(self.active_stream_events),
            "input_parts_by_type": dict(self.input_parts_by_type),
            "input_parts_inline": self.input_parts_inline,
        }

    def count_input_parts(self, request: Mapping[str, Any]) -> None:
        for part in _input_parts(request):
            kind = str(part.get("type"))
            self.input_parts_by_type[kind] = self.input_parts_by_type.get(kind, 0) + 1
            if _inline(part):
                self.input_parts_inline += 1

    def record_request(self, scenario: str, request: Mapping[str, Any], job: _Job | None) -> None:
        output = job.final_output() if job is not None else []
        self.recent_requests.append(
            {
                "seq": self.requests_total,
                "response_id": job.resp_id if job is not None else None,
                "model": request.get("model"),
                "scenario": scenario,
                "input": summarize_input(request.get("input")),
                "output": [{"type": item.get("type"), "id": item.get("id")} for item in output],
            }
        )


def summarize_input(items: object) -> list[dict[str, Any]]:
    """One small dict per input item: its type, role, ids, status, encrypted content and
    text (cut to ``SUMMARY_TEXT_CHARS``), and the types of its content parts. Inline data
    (images, files) is never copied; a plain string input is one user message."""
    if isinstance(items, str):
        return [{"type": "message", "role": "user", "text": items[:SUMMARY_TEXT_CHARS]}]
    if not isinstance(items, list):
        return []
    out: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, dict):
            out.append({"type": type(item).__name__})
            continue
        summary: dict[str, Any] = {
            key: item[key]
            for key in ("type", "role", "id", "status", "call_id", "name")
            if isinstance(item.get(key), str)
        }
        encrypted = item.get("encrypted_content")
        if isinstance(encrypted, str):
            summary["encrypted_content"] = encrypted[:SUMMARY_TEXT_CHARS]
        texts: list[str] = []
        content = item.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            parts = [part for part in content if isinstance(part, dict)]
            summary["parts"] = [str(part.get("type")) for part in parts]
            texts += [part["text"] for part in parts if isinstance(part.get("text"), str)]
        for key in ("summary", "output", "arguments"):
            value = item.get(key)
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                texts += [
                    part["text"]
                    for part in value
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                ]
        if texts:
            summary["text"] = "".join(texts)[:SUMMARY_TEXT_CHARS]
        out.append(summary)
    return out


@dataclass(frozen=True)
class MockServer:
    """A running mock: where it listens and its live counters."""

    host: str
    port: int
    stats: MockStats

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"


# --------------------------------------------------------------------------------------------
# Small ASGI helpers
# --------------------------------------------------------------------------------------------


def _raw_headers(pairs: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs]


async def _send_json(
    send: Send, status: int, obj: object, headers: Sequence[tuple[str, str]] = ()
) -> None:
    body = _encode(obj)
    all_headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *headers,
    ]
    await send(
        {"type": "http.response.start", "status": status, "headers": _raw_headers(all_headers)}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client went away first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# --------------------------------------------------------------------------------------------
# Output items shared by the streaming and the JSON paths (contract 1.7)
# --------------------------------------------------------------------------------------------


def _output_text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


def _message_item(
    item_id: str, status: str, text: str | None, annotations: list[dict[str, Any]]
) -> dict[str, Any]:
    content = [] if text is None else [_output_text_part(text, annotations)]
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _reasoning_item(item_id: str, p: ScenarioPlan, *, done: bool) -> dict[str, Any]:
    summary: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    if done and p.reasoning_style == "text":
        content = [{"type": "reasoning_text", "text": p.reasoning_text}]
    elif done:
        summary = [{"type": "summary_text", "text": p.reasoning_text}]
    item: dict[str, Any] = {
        "type": "reasoning",
        "id": item_id,
        "status": "completed" if done else "in_progress",
        "summary": summary,
        "encrypted_content": f"gAAAAmock-{item_id}-{len(p.reasoning_text)}" if done else None,
        "format": "openai-responses-v1",
    }
    if content:
        item["content"] = content
    return item


def _image_item(item_id: str, image: str, *, done: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "image_generation_call",
        "id": item_id,
        "status": "completed" if done else "in_progress",
    }
    if done:
        item.update(result=image, output_format="png")
    return item


def _call_item(item_id: str, call: FunctionCall, *, done: bool) -> dict[str, Any]:
    call_id, name, arguments = call
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments if done else "",
        "status": "completed" if done else "in_progress",
    }


def _annotations(p: ScenarioPlan) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    n = len(p.citations)
    for k, (url, title) in enumerate(p.citations):
        start = k * len(p.text) // max(n, 1)
        out.append(
            {
                "type": "url_citation",
                "url": url,
                "title": title,
                "start_index": start,
                "end_index": min(start + 8, len(p.text)),
            }
        )
    return out


def _arg_chunks(arguments: str, parts: int = 4) -> list[str]:
    size = max(1, -(-len(arguments) // parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def _error_code(p: ScenarioPlan) -> int | str:
    return 502 if p.knobs.code_style == "int" else "server_error"


PROVIDER_ERROR_MESSAGE: Final = "The model provider returned an error"


# --------------------------------------------------------------------------------------------
# One request's identity and base response object
# --------------------------------------------------------------------------------------------


@dataclass
class _Job:
    plan: ScenarioPlan
    n: int
    request: Mapping[str, Any]

    @property
    def resp_id(self) -> str:
        return f"resp_mock_{self.n}"

    @property
    def gen_id(self) -> str:
        return f"gen-{self.n}"

    def item_id(self, prefix: str, index: int = 0) -> str:
        return f"{prefix}_{self.n}_{index}"

    def response(self, status: str, output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        req = self.request
        metadata = req.get("metadata")
        obj: dict[str, Any] = {
            "id": self.resp_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": req.get("model") or "mock/" + self.plan.scenario,
            "status": status,
            "completed_at": int(time.time()) if status == "completed" else None,
            "output": output,
            "error": None,
            "incomplete_details": None,
            "temperature": req.get("temperature"),
            "top_p": req.get("top_p"),
            "presence_penalty": req.get("presence_penalty"),
            "frequency_penalty": req.get("frequency_penalty"),
            "instructions": req.get("instructions"),
            "metadata": metadata if isinstance(metadata, dict) else {},
            "tools": req.get("tools") or [],
            "tool_choice": req.get("tool_choice") or "auto",
            "parallel_tool_calls": req.get("parallel_tool_calls", True),
            "max_output_tokens": req.get("max_output_tokens"),
            "store": False,
            "usage": None,
        }
        obj.update(extra)
        return obj

    def final_output(self) -> list[dict[str, Any]]:
        """The ``output`` of the terminal response when the whole plan was sent."""
        p = self.plan
        output: list[dict[str, Any]] = []
        if p.scenario == "reasoning":
            output.append(_reasoning_item(self.item_id("rs"), p, done=True))
        for i, image in enumerate(p.images):
            output.append(_image_item(self.item_id("ig", i), image, done=True))
        for i, call in enumerate(p.function_calls):
            output.append(_call_item(self.item_id("fc", i), call, done=True))
        if not p.function_calls:
            status = "incomplete" if p.terminal in ("incomplete", "failed") else "completed"
            output.append(_message_item(self.item_id("msg"), status, p.text, _annotations(p)))
        return output

    def final_response(self) -> dict[str, Any]:
        """The JSON body of a non-streaming request (and the terminal event's ``response``)."""
        p = self.plan
        output = self.final_output()
        if p.terminal == "incomplete":
            return self.response(
                "incomplete",
                output,
                incomplete_details={"reason": "max_output_tokens"},
                usage=dict(p.usage),
            )
        if p.terminal in ("failed", "error", "response.error"):
            return self.response(
                "failed",
                output,
                error={"code": "server_error", "message": PROVIDER_ERROR_MESSAGE},
                error_type="provider_unavailable",
                usage=dict(p.usage),
            )
        return self.response("completed", output, usage=dict(p.usage))


# --------------------------------------------------------------------------------------------
# SSE writing
# --------------------------------------------------------------------------------------------


class _Dropped(Exception):
    """Raised to abandon a response mid-body (the ``drop`` scenario)."""


class _SseWriter:
    """Numbers events, batches ``events_per_write`` of them per ASGI send, keeps stats."""

    __slots__ = (
        "_buf",
        "_events_in_buf",
        "_per_write",
        "_resp_id",
        "_send",
        "_stats",
        "closing",
        "seq",
    )

    def __init__(self, send: Send, stats: MockStats, resp_id: str, per_write: int) -> None:
        self._send = send
        self._stats = stats
        self._resp_id = resp_id
        self._per_write = per_write
        self._buf: list[bytes] = []
        self._events_in_buf = 0
        self.seq = 0
        #: Set once the response's last message is being sent: from then on a disconnect is
        #: the normal end of the exchange and must not cancel hypercorn mid-send.
        self.closing = False

    def next_seq(self) -> int:
        seq = self.seq
        self.seq += 1
        return seq

    async def event(self, type_: str, **fields: Any) -> None:
        obj = {"type": type_, "sequence_number": self.next_seq(), **fields}
        await self.raw(b"data: " + _encode(obj) + b"\n\n")

    async def raw(self, line: bytes, *, events: int = 1) -> None:
        """Queue one pre-built SSE block (which already took its sequence number)."""
        self._buf.append(line)
        self._events_in_buf += events
        if self._events_in_buf >= self._per_write:
            await self.flush()

    async def comment(self) -> None:
        self._buf.append(KEEPALIVE)
        await self.flush()

    async def flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        events = self._events_in_buf
        self._buf.clear()
        self._events_in_buf = 0
        await self._send({"type": "http.response.body", "body": data, "more_body": True})
        stats = self._stats
        stats.events_sent_total += events
        stats.bytes_sent_total += len(data)
        stats.active_stream_events[self._resp_id] += events

    async def finish(self, *, done: bool) -> None:
        if done:
            self._buf.append(DONE)
        await self.flush()
        self.closing = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


def _delta_line(seq: int, output_index: int, item_id: str, delta: str) -> bytes:
    """An ``output_text.delta`` line whose delta may hold lone surrogates.

    msgspec refuses lone surrogates, so the JSON is assembled here: the fixed keys through
    msgspec and the delta through ``json.dumps`` (ASCII mode writes ``\\udXXX`` escapes).
    """
    head = _encode(
        {
            "type": "response.output_text.delta",
            "sequence_number": seq,
            "output_index": output_index,
            "item_id": item_id,
            "content_index": 0,
        }
    )
    return (
        b"data: " + head[:-1] + b',"delta":' + json.dumps(delta).encode() + b',"logprobs":[]}\n\n'
    )


class _Pacer:
    """The plan's pacing: delta ``k`` is due ``k / tps`` seconds after the stream started."""

    __slots__ = ("_plan", "_t0", "_ticks", "_w")

    def __init__(self, plan_: ScenarioPlan, writer: _SseWriter) -> None:
        self._plan = plan_
        self._w = writer
        self._t0 = trio.current_time()
        self._ticks = 0  # deltas paced so far (reasoning + text)

    async def tick(self) -> None:
        tps = self._plan.tps
        if tps <= 0:
            self._ticks += 1
            return
        deadline = self._t0 + self._ticks / tps
        self._ticks += 1
        if not self._plan.keepalive:
            await trio.sleep_until(deadline)
            return
        # Long gaps get a keep-alive comment every KEEPALIVE_GAP seconds, as OpenRouter does.
        while trio.current_time() + KEEPALIVE_GAP < deadline:
            await trio.sleep(KEEPALIVE_GAP)
            await self._w.comment()
        await trio.sleep_until(deadline)


class _StreamRun:
    """Writes one streaming response for a plan (events, pacing, faults)."""

    def __init__(self, job: _Job, writer: _SseWriter) -> None:
        self.job = job
        self.plan = job.plan
        self.w = writer
        self._pacer = _Pacer(job.plan, writer)

    async def _pace(self) -> None:
        await self._pacer.tick()

    async def _stall(self) -> None:
        # Nothing at all on the wire (no keep-alives) until the stall ends or the client leaves.
        await self.w.flush()
        await trio.sleep(self.plan.knobs.stall_s)

    async def run(self) -> None:
        p, job, w = self.plan, self.job, self.w
        if p.keepalive:
            await w.comment()
        await w.event("response.created", response=job.response("in_progress", []))
        if p.stall_before_in_progress:
            await self._stall()
        await w.event("response.in_progress", response=job.response("in_progress", []))
        output: list[dict[str, Any]] = []
        if p.scenario == "reasoning":
            output.append(await self._reasoning(len(output)))
        for i, image in enumerate(p.images):
            output.append(await self._image(len(output), i, image))
        for i, call in enumerate(p.function_calls):
            output.append(await self._function_call(len(output), i, call))
        if not p.function_calls:
            finished = await self._message(len(output), output)
            if not finished:
                return
        if p.terminal == "none":
            await w.finish(done=p.knobs.done)
            return
        final = job.final_response()
        final["output"] = output
        await w.event(f"response.{final['status']}", response=final)
        await w.finish(done=p.knobs.done)

    async def _reasoning(self, index: int) -> dict[str, Any]:
        p, w = self.plan, self.w
        item_id = self.job.item_id("rs")
        await w.event(
            "response.output_item.added",
            output_index=index,
            item=_reasoning_item(item_id, p, done=False),
        )
        ids: dict[str, Any] = {"item_id": item_id, "output_index": index}
        if p.reasoning_style == "text":
            for delta in p.reasoning_deltas:
                await self._pace()
                await w.event("response.reasoning_text.delta", **ids, content_index=0, delta=delta)
            await w.event(
                "response.reasoning_text.done", **ids, content_index=0, text=p.reasoning_text
            )
        else:
            part = {"type": "summary_text", "text": ""}
            await w.event(
                "response.reasoning_summary_part.added", **ids, summary_index=0, part=part
            )
            for delta in p.reasoning_deltas:
                await self._pace()
                await w.event(
                    "response.reasoning_summary_text.delta", **ids, summary_index=0, delta=delta
                )
            await w.event(
                "response.reasoning_summary_text.done",
                **ids,
                summary_index=0,
                text=p.reasoning_text,
            )
            done_part = {"type": "summary_text", "text": p.reasoning_text}
            await w.event(
                "response.reasoning_summary_part.done", **ids, summary_index=0, part=done_part
            )
        item = _reasoning_item(item_id, p, done=True)
        await w.event("response.output_item.done", output_index=index, item=item)
        return item

    async def _image(self, index: int, i: int, image: str) -> dict[str, Any]:
        w = self.w
        item_id = self.job.item_id("ig", i)
        added = _image_item(item_id, image, done=False)
        await w.event("response.output_item.added", output_index=index, item=added)
        for stage in ("in_progress", "generating"):
            await self._pace()
            await w.event(
                f"response.image_generation_call.{stage}", item_id=item_id, output_index=index
            )
        await w.event(
            "response.image_generation_call.completed", item_id=item_id, output_index=index
        )
        item = _image_item(item_id, image, done=True)
        await w.event("response.output_item.done", output_index=index, item=item)
        return item

    async def _function_call(self, index: int, i: int, call: FunctionCall) -> dict[str, Any]:
        w = self.w
        item_id = self.job.item_id("fc", i)
        added = _call_item(item_id, call, done=False)
        await w.event("response.output_item.added", output_index=index, item=added)
        for chunk in _arg_chunks(call[2]):
            await self._pace()
            await w.event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=chunk,
            )
        await w.event(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            name=call[1],
            arguments=call[2],
        )
        item = _call_item(item_id, call, done=True)
        await w.event("response.output_item.done", output_index=index, item=item)
        return item

    async def _message(self, index: int, output: list[dict[str, Any]]) -> bool:
        """Stream the message item; False if the stream ended inside it (fault)."""
        p, w = self.plan, self.w
        item_id = self.job.item_id("msg")
        ids: dict[str, Any] = {"output_index": index, "item_id": item_id, "content_index": 0}
        await w.event(
            "response.output_item.added",
            output_index=index,
            item=_message_item(item_id, "in_progress", None, []),
        )
        await w.event("response.content_part.added", **ids, part=_output_text_part("", []))
        handmade = p.split_surrogates
        for k, delta in enumerate(p.wire_deltas):
            if k == p.fault_at and not await self._fault(index, item_id, output):
                return False
            await self._pace()
            if handmade:
                await w.raw(_delta_line(w.next_seq(), index, item_id, delta))
            else:
                await w.event("response.output_text.delta", **ids, delta=delta, logprobs=[])
        if p.fault_at == len(p.wire_deltas) and not await self._fault(index, item_id, output):
            return False
        annotations = _annotations(p)
        for k, annotation in enumerate(annotations):
            await w.event(
                "response.output_text.annotation.added",
                **ids,
                annotation_index=k,
                annotation=annotation,
            )
        await w.event("response.output_text.done", **ids, text=p.text, logprobs=[])
        part = _output_text_part(p.text, annotations)
        await w.event("response.content_part.done", **ids, part=part)
        status = "incomplete" if p.terminal == "incomplete" else "completed"
        item = _message_item(item_id, status, p.text, annotations)
        await w.event("response.output_item.done", output_index=index, item=item)
        output.append(item)
        return True

    async def _fault(self, index: int, item_id: str, output: list[dict[str, Any]]) -> bool:
        """Inject the scenario's fault; False when the stream is over afterwards."""
        p, w = self.plan, self.w
        scenario = p.scenario
        if scenario == "stall":
            await self._stall()
            return True
        if scenario in ("malformed", "invalid-utf8", "oversized"):
            await w.raw(self._bad_event(index, item_id))
            return True
        if scenario == "drop":
            await w.flush()
            raise _Dropped
        # In-band errors: the partial message is left unfinished.
        partial_item = _message_item(item_id, "incomplete", p.text, [])
        if scenario == "failed":
            final = self.job.final_response()
            final["output"] = [*output, partial_item]
            await w.event("response.failed", response=final)
        elif scenario == "response-error":
            error = {"code": _error_code(p), "message": PROVIDER_ERROR_MESSAGE}
            await w.event("response.error", error=error)
        elif p.knobs.error_shape == "nested":
            error = {"code": _error_code(p), "message": PROVIDER_ERROR_MESSAGE}
            await w.event("error", error=error)
        else:
            await w.event("error", code=_error_code(p), message=PROVIDER_ERROR_MESSAGE, param=None)
        await w.finish(done=p.knobs.done)
        return False

    def _bad_event(self, index: int, item_id: str) -> bytes:
        p, seq = self.plan, self.w.next_seq()
        if p.scenario == "malformed":
            # Truncated JSON: the object and the string never close.
            return (
                b'data: {"type": "response.output_text.delta", "sequence_number": '
                + str(seq).encode()
                + b', "delta": \n\n'
            )
        if p.scenario == "invalid-utf8":
            line = _delta_line(seq, index, item_id, "BAD")
            return line.replace(b'"BAD"', b'"\xff\xfe"')
        return _delta_line(seq, index, item_id, p.oversize_delta)


# --------------------------------------------------------------------------------------------
# Chat Completions: the same plan in chat.completion.chunk form
# --------------------------------------------------------------------------------------------


def _chat_usage(p: ScenarioPlan) -> dict[str, Any]:
    usage = p.usage
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        "cost": usage["cost"],
        "prompt_tokens_details": {"cached_tokens": usage["input_tokens_details"]["cached_tokens"]},
        "completion_tokens_details": {
            "reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"]
        },
    }


def _chat_finish(p: ScenarioPlan) -> str:
    return "length" if p.terminal == "incomplete" else "stop"


def _chat_completion(job: _Job) -> dict[str, Any]:
    """The JSON body of a non-streaming ``/chat/completions`` request."""
    p = job.plan
    message: dict[str, Any] = {"role": "assistant", "content": p.text}
    if p.reasoning_text:
        message["reasoning"] = p.reasoning_text
    return {
        "id": job.gen_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": job.request.get("model"),
        "provider": "MockProvider",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _chat_finish(p),
                "native_finish_reason": _chat_finish(p),
                "logprobs": None,
            }
        ],
        "usage": _chat_usage(p),
    }


class _ChatStreamRun:
    """Writes one streaming ``/chat/completions`` answer: a chunk per delta, paced as the
    Responses stream of the same plan is, then the finish chunk, the usage chunk, [DONE]."""

    def __init__(self, job: _Job, writer: _SseWriter) -> None:
        self.job = job
        self.plan = job.plan
        self.w = writer
        self._pacer = _Pacer(job.plan, writer)
        self._created = int(time.time())
        # Lone surrogates (split_surrogates) can only be written as JSON escapes.
        self._dumps: Callable[[object], bytes] = (
            (lambda obj: json.dumps(obj).encode()) if job.plan.split_surrogates else _encode
        )

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> bytes:
        obj: dict[str, Any] = {
            "id": self.job.gen_id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.job.request.get("model"),
            "provider": "MockProvider",
            "choices": choices,
        }
        if usage is not None:
            obj["usage"] = usage
        return b"data: " + self._dumps(obj) + b"\n\n"

    @staticmethod
    def _choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "index": 0,
            "delta": {"role": "assistant", **delta},
            "finish_reason": finish,
            "native_finish_reason": finish,
            "logprobs": None,
        }

    async def run(self) -> None:
        p, w = self.plan, self.w
        if p.keepalive:
            await w.comment()
        for delta in p.reasoning_deltas:
            await self._pacer.tick()
            await w.raw(self._chunk([self._choice({"content": "", "reasoning": delta})]))
        for delta in p.wire_deltas:
            await self._pacer.tick()
            await w.raw(self._chunk([self._choice({"content": delta})]))
        await w.raw(self._chunk([self._choice({"content": ""}, _chat_finish(p))]))
        await w.raw(self._chunk([], _chat_usage(p)))
        await w.finish(done=p.knobs.done)


# --------------------------------------------------------------------------------------------
# The ASGI app
# --------------------------------------------------------------------------------------------


def _with_header_params(
    metadata: object, header: str | None, defaults: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``mock.*`` parameters from ``X-Mock-Params: tokens=2000&tps=200`` (a query string),
    for clients that cannot set ``metadata`` (the Open WebUI pipe). The body's
    ``metadata`` wins where both name a parameter; the server's ``defaults`` (``--param``)
    apply where neither does."""
    merged: dict[str, Any] = {PARAM_PREFIX + k: v for k, v in (defaults or {}).items()}
    if header:
        for name, values in parse_qs(header, keep_blank_values=True).items():
            merged[PARAM_PREFIX + name] = values[-1]
    if isinstance(metadata, dict):
        merged.update(metadata)
    return merged


#: Item statuses the API accepts on input (contract §1.3): not failed/skipped/cancelled.
_INPUT_STATUSES: Final = frozenset({"in_progress", "completed", "incomplete"})


def _input_problem(items: object) -> str:
    """Why OpenRouter would reject these input items with a 400; "" when it would not.

    The checks a tool loop can get wrong: item statuses, a function call's
    shape, and every ``function_call_output`` answering an earlier call.
    """
    if not isinstance(items, list):
        return ""  # a plain string input
    calls: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        status = item.get("status")
        if status is not None and status not in _INPUT_STATUSES:
            return f"Invalid input[{index}].status {status!r}: expected one of " + ", ".join(
                sorted(_INPUT_STATUSES)
            )
        kind = item.get("type")
        if kind == "function_call":
            if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
                return f"Invalid input[{index}]: a function_call needs call_id, name, arguments"
            calls.add(item["call_id"])
        elif kind == "function_call_output" and item.get("call_id") not in calls:
            return (
                f"No tool call found for function call output with call_id "
                f"{item.get('call_id')!r} (input[{index}])"
            )
    return ""


def _count_tool_outputs(request: Mapping[str, Any]) -> int:
    items = request.get("input")
    if not isinstance(items, list):
        return 0
    return sum(
        1 for it in items if isinstance(it, dict) and it.get("type") == "function_call_output"
    )


def _input_parts(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The content parts of the request's input messages (a string content has none)."""
    items = request.get("input")
    if not isinstance(items, list):
        return []
    return [
        part
        for item in items
        if isinstance(item, dict) and isinstance(item.get("content"), list)
        for part in item["content"]
        if isinstance(part, dict)
    ]


def _inline(part: Mapping[str, Any]) -> bool:
    """Whether a part carries its bytes: a data URL, base64 file data or audio data."""
    url = part.get("image_url") or part.get("file_url") or part.get("video_url")
    if isinstance(url, str) and url.startswith("data:"):
        return True
    if isinstance(part.get("file_data"), str):
        return True
    audio = part.get("input_audio")
    return isinstance(audio, dict) and isinstance(audio.get("data"), str)


def _tool_names(request: Mapping[str, Any]) -> list[str]:
    tools = request.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        t["name"]
        for t in tools
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    ]


class MockApp:
    """ASGI 3 app for the mock. One instance per server; holds the attempt counters."""

    def __init__(
        self,
        stats: MockStats,
        api_key: str | None = None,
        default_params: Mapping[str, str] | None = None,
        variants: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.stats = stats
        self.api_key = api_key
        self.default_params = dict(default_params or {})
        #: Variant name -> its ``mock.*`` parameters (no prefix), for ``mock/<scenario>:<name>``.
        self.variants = {name: dict(params) for name, params in (variants or {}).items()}
        self.catalogue = CATALOGUE + variant_models(list(self.variants))
        self._ids = itertools.count(1)
        self._attempts: dict[str, int] = {}

    def _param_defaults(self, model: object) -> dict[str, str]:
        """The server's ``--param`` defaults, overlaid with the model's variant, if any."""
        variant = variant_of(model)
        if variant is None or variant not in self.variants:
            return self.default_params
        return {**self.default_params, **self.variants[variant]}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if path == "/mock/stats" and method == "GET":
            await _send_json(send, 200, self.stats.snapshot())
            return
        if path == "/mock/requests" and method == "GET":
            await _send_json(send, 200, {"requests": list(self.stats.recent_requests)})
            return
        if path.startswith(API_PREFIX) and not await self._authorized(headers, send):
            return
        if path == f"{API_PREFIX}/responses":
            if method != "POST":
                await _send_json(send, 405, error_envelope(405, "Method not allowed"))
                return
            await self._responses(headers, receive, send)
        elif path == f"{API_PREFIX}/chat/completions":
            if method != "POST":
                await _send_json(send, 405, error_envelope(405, "Method not allowed"))
                return
            await self._chat_completions(headers, receive, send)
        elif path == f"{API_PREFIX}/models" and method == "GET":
            await self._models(scope["query_string"], send)
        else:
            await _send_json(send, 404, error_envelope(404, f"Not found: {path}"))

    async def _authorized(self, headers: Mapping[str, str], send: Send) -> bool:
        if self.api_key is None:
            return True
        auth = headers.get("authorization")
        if auth is None:
            await _send_json(send, 401, error_envelope(401, "Missing Authentication header"))
            return False
        if auth != f"Bearer {self.api_key}":
            await _send_json(send, 401, error_envelope(401, "User not found."))
            return False
        return True

    async def _models(self, query_string: bytes, send: Send) -> None:
        query = parse_qs(query_string.decode("latin-1"))
        models = list(self.catalogue)
        total = len(models)
        next_link: str | None = None
        if "limit" in query or "offset" in query:  # paging only when asked for (contract 1.12)
            try:
                limit = int(query.get("limit", ["1000"])[0])
                offset = int(query.get("offset", ["0"])[0])
                if not 1 <= limit <= 1000 or offset < 0:
                    raise ValueError
            except ValueError:
                await _send_json(send, 400, error_envelope(400, "Invalid limit or offset"))
                return
            models = models[offset : offset + limit]
            if offset + limit < total:
                next_link = f"{API_PREFIX}/models?offset={offset + limit}&limit={limit}"
        await _send_json(
            send, 200, {"data": models, "total_count": total, "links": {"next": next_link}}
        )

    async def _responses(self, headers: Mapping[str, str], receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        request, problem = self._parse_request(body)
        if request is None:
            await _send_json(send, 400, error_envelope(400, problem))
            return
        try:
            scenario = resolve_scenario(request.get("model"), headers.get("x-mock-scenario"))
            metadata = _with_header_params(
                request.get("metadata"),
                headers.get("x-mock-params"),
                self._param_defaults(request.get("model")),
            )
            p = plan(
                scenario,
                metadata,
                tool_outputs=_count_tool_outputs(request),
                tool_names=_tool_names(request),
            )
        except (ScenarioError, ParamError) as exc:
            await _send_json(send, 400, error_envelope(400, str(exc)))
            return
        stats = self.stats
        stats.requests_total += 1
        stats.requests_by_scenario[scenario] = stats.requests_by_scenario.get(scenario, 0) + 1
        stats.count_input_parts(request)
        if p.http_error is not None and self._should_fail(p):
            stats.record_request(scenario, request, None)
            err = p.http_error
            await _send_json(send, err.status, err.body, err.headers)
            return
        if p.http_error is not None:
            # Past its failures the request behaves like `text` with the same parameters.
            p = plan("text", metadata)
        job = _Job(plan=p, n=next(self._ids), request=request)
        stats.record_request(scenario, request, job)
        if request.get("stream") is True:
            await self._stream(job, receive, send, _StreamRun)
        else:
            await _send_json(send, 200, job.final_response(), [("X-Generation-Id", job.gen_id)])

    async def _chat_completions(
        self, headers: Mapping[str, str], receive: Receive, send: Send
    ) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        try:
            request = _decode(body)
        except msgspec.DecodeError as exc:
            await _send_json(send, 400, error_envelope(400, f"Invalid JSON body: {exc}"))
            return
        if not isinstance(request, dict) or not request.get("model"):
            problem = "Missing required parameter: 'model'."
            await _send_json(send, 400, error_envelope(400, problem))
            return
        messages = request.get("messages")
        if not isinstance(messages, list):
            await _send_json(send, 400, error_envelope(400, "'messages' must be a list"))
            return
        model = request["model"]
        try:
            scenario = resolve_scenario(model, headers.get("x-mock-scenario"))
            metadata = _with_header_params(
                request.get("metadata"), headers.get("x-mock-params"), self._param_defaults(model)
            )
            p = plan(scenario, metadata)
        except (ScenarioError, ParamError) as exc:
            await _send_json(send, 400, error_envelope(400, str(exc)))
            return
        stats = self.stats
        stats.requests_total += 1
        stats.requests_by_scenario[scenario] = stats.requests_by_scenario.get(scenario, 0) + 1
        summary = {"model": model, "input": messages}
        if p.http_error is not None and self._should_fail(p):
            stats.record_request(scenario, summary, None)
            err = p.http_error
            await _send_json(send, err.status, err.body, err.headers)
            return
        if p.http_error is not None:
            p = plan("text", metadata)
        if p.scenario not in CHAT_SCENARIOS:
            served = ", ".join(sorted(CHAT_SCENARIOS))
            problem = f"scenario {p.scenario!r} is not served on /chat/completions ({served})"
            await _send_json(send, 400, error_envelope(400, problem))
            return
        job = _Job(plan=p, n=next(self._ids), request=summary)
        stats.record_request(scenario, summary, job)
        if request.get("stream") is True:
            await self._stream(job, receive, send, _ChatStreamRun)
        else:
            await _send_json(send, 200, _chat_completion(job), [("X-Generation-Id", job.gen_id)])

    @staticmethod
    def _parse_request(body: bytes) -> tuple[dict[str, Any] | None, str]:
        try:
            request = _decode(body)
        except msgspec.DecodeError as exc:
            return None, f"Invalid JSON body: {exc}"
        if not isinstance(request, dict):
            return None, "Request body must be a JSON object"
        if request.get("store") is True:
            return None, "store must be false: the Responses API is stateless"
        if request.get("previous_response_id") is not None:
            return None, "previous_response_id is not supported: the Responses API is stateless"
        if "model" not in request and "models" not in request:
            return None, "Missing required parameter: 'model'."
        problem = _input_problem(request.get("input"))
        if problem:
            return None, problem
        return request, ""

    def _should_fail(self, p: ScenarioPlan) -> bool:
        if p.knobs.fail_times < 0:
            return True
        key = p.knobs.attempt_key
        seen = self._attempts.get(key, 0)
        self._attempts[key] = seen + 1
        return seen < p.knobs.fail_times

    async def _stream(
        self,
        job: _Job,
        receive: Receive,
        send: Send,
        runner: Callable[[_Job, _SseWriter], _StreamRun | _ChatStreamRun],
    ) -> None:
        stats = self.stats
        headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
            ("x-generation-id", job.gen_id),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": _raw_headers(headers)})
        writer = _SseWriter(send, stats, job.resp_id, job.plan.events_per_write)
        stats.streams_active += 1
        stats.active_stream_events[job.resp_id] = 0
        finished = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope, writer)
                # On _Dropped we return without the final body message, so hypercorn closes
                # the connection mid chunked body: the client sees an incomplete message.
                with contextlib.suppress(_Dropped):
                    await runner(job, writer).run()
                finished = True
                nursery.cancel_scope.cancel()
        finally:
            stats.streams_active -= 1
            del stats.active_stream_events[job.resp_id]
            if finished:
                stats.streams_completed += 1
            else:
                stats.streams_disconnected += 1


async def _cancel_on_disconnect(
    receive: Receive, scope: trio.CancelScope, writer: _SseWriter
) -> None:
    # The body was read already, so the next message can only be http.disconnect. hypercorn
    # also sends it after a normal end of the response; that one is ignored.
    while (await receive())["type"] != "http.disconnect":
        pass
    if not writer.closing:
        scope.cancel()


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


def _config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None  # per-request logging is too slow under load
    config.errorlog = "-"  # errors to stderr
    config.loglevel = "WARNING"  # no "Running on" banner: the CLI prints its own line
    config.backlog = 2048  # 200+ simultaneous connects must not overflow the accept queue
    config.keep_alive_timeout = 75
    config.graceful_timeout = 0
    return config


def _port_of(binds: Sequence[str]) -> int:
    # hypercorn reports binds like "http://127.0.0.1:54321" or "http://[::1]:54321".
    return int(binds[0].rsplit(":", 1)[1])


async def serve_mock(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    default_params: Mapping[str, str] | None = None,
    variants: Mapping[str, Mapping[str, str]] | None = None,
    task_status: trio.TaskStatus[MockServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the mock until cancelled; ``task_status.started(MockServer)`` once bound.

    ``default_params`` (``{"tps": "25"}``) are ``mock.*`` parameters for every request that
    does not name them itself; ``variants`` (``{"d20": {"tokens": "200", "tps": "50"}}``)
    add models ``mock/text:d20`` whose requests get those parameters over the defaults.
    Both are checked here, so a typo fails at start-up."""
    for params in (default_params or {}, *(variants or {}).values()):
        parse_params({PARAM_PREFIX + name: value for name, value in params.items()})
    stats = MockStats()
    # hypercorn types ASGI messages as TypedDicts; the app uses plain dicts, same wire shape.
    app: Any = MockApp(stats, api_key, default_params, variants)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(serve, app, _config(host, port), mode="asgi")
        )
        task_status.started(MockServer(host=host, port=_port_of(binds), stats=stats))


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


async def _main(
    host: str,
    port: int,
    api_key: str | None,
    default_params: Mapping[str, str],
    variants: Mapping[str, Mapping[str, str]],
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server: MockServer = await nursery.start(
                partial(
                    serve_mock,
                    host=host,
                    port=port,
                    api_key=api_key,
                    default_params=default_params,
                    variants=variants,
                )
            )
            print(f"mock-openrouter listening on {server.base_url}", flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Mock OpenRouter Responses API (loopback)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a mock.* parameter for every request that does not set it (repeatable), "
        "e.g. --param tps=25 paces answers so a browser can watch them stream",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PARAM=VALUE&...",
        help="a bench variant (repeatable): model mock/text:NAME is listed and its requests "
        "get these mock.* parameters, e.g. --variant d20=tokens=200&tps=50",
    )
    args = parser.parse_args(argv)
    variants: dict[str, dict[str, str]] = {}
    for spec in args.variant:
        try:
            name, params = parse_variant(spec)
        except ValueError as exc:
            parser.error(str(exc))
        variants[name] = params
    defaults: dict[str, str] = {}
    for pair in args.param:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--param takes NAME=VALUE, got {pair!r}")
        defaults[name.strip().removeprefix(PARAM_PREFIX)] = value.strip()
    try:
        parse_params({PARAM_PREFIX + name: value for name, value in defaults.items()})
    except ParamError as exc:
        parser.error(str(exc))
    trio.run(_main, args.host, args.port, args.api_key, defaults, variants)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
