"""How the mock writes one Responses stream: SSE framing and batching, pacing, faults.

Owns ``SseWriter`` (numbers events, batches ``events_per_write`` of them per
ASGI send, writes keep-alive comments, keeps the server's byte and event
counters), ``Pacer`` (delta ``k`` is due ``k / tps`` seconds after the
stream started) and ``StreamRun`` (every event of one plan, in order, with
the plan's fault injected on the wire: drop, stall, bad events, in-band
errors). Cancelled when the client disconnects (``bench.mock_openrouter``);
nothing here needs cleaning up then.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import trio

from orpipe.bench.mock_requests import MockStats
from orpipe.bench.mock_responses import (
    PROVIDER_ERROR_MESSAGE,
    Job,
    arg_chunks,
    call_item,
    error_code,
    image_item,
    message_item,
    output_text_part,
    reasoning_item,
    url_annotations,
)
from orpipe.bench.mock_scenarios import FunctionCall, ScenarioPlan

__all__ = ["Dropped", "Message", "Pacer", "Send", "SseWriter", "StreamRun"]

Message = dict[str, Any]
#: The ASGI ``send`` callable.
Send = Callable[[Message], Awaitable[None]]

KEEPALIVE: Final = b": OPENROUTER PROCESSING\n\n"
DONE: Final = b"data: [DONE]\n\n"
#: Longest silence (seconds) before a keep-alive comment is written during a slow stream.
KEEPALIVE_GAP: Final = 1.0

_encode = msgspec.json.Encoder().encode


class Dropped(Exception):
    """Raised to abandon a response mid-body (the ``drop`` scenario)."""


class SseWriter:
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


class Pacer:
    """The plan's pacing: delta ``k`` is due ``k / tps`` seconds after the stream started."""

    __slots__ = ("_plan", "_t0", "_ticks", "_w")

    def __init__(self, plan_: ScenarioPlan, writer: SseWriter) -> None:
        self._plan = plan_
        self._w = writer
        self._t0 = trio.current_time()
        self._ticks = 0  # deltas paced so far (reasoning + text)

    async def tick(self) -> None:
        tps = self._plan.knobs.tps
        if tps <= 0:
            self._ticks += 1
            return
        deadline = self._t0 + self._ticks / tps
        self._ticks += 1
        if not self._plan.knobs.keepalive:
            await trio.sleep_until(deadline)
            return
        # Long gaps get a keep-alive comment every KEEPALIVE_GAP seconds, as OpenRouter does.
        while trio.current_time() + KEEPALIVE_GAP < deadline:
            await trio.sleep(KEEPALIVE_GAP)
            await self._w.comment()
        await trio.sleep_until(deadline)


class StreamRun:
    """Writes one streaming response for a plan (events, pacing, faults)."""

    def __init__(self, job: Job, writer: SseWriter) -> None:
        self.job = job
        self.plan = job.plan
        self.w = writer
        self._pacer = Pacer(job.plan, writer)

    async def _pace(self) -> None:
        await self._pacer.tick()

    async def _added(self, index: int, item: dict[str, Any]) -> None:
        await self.w.event("response.output_item.added", output_index=index, item=item)

    async def _done(self, index: int, item: dict[str, Any]) -> dict[str, Any]:
        await self.w.event("response.output_item.done", output_index=index, item=item)
        return item

    async def _stall(self) -> None:
        # Nothing at all on the wire (no keep-alives) until the stall ends or the client leaves.
        await self.w.flush()
        await trio.sleep(self.plan.knobs.stall_s)

    async def run(self) -> None:
        p, job, w = self.plan, self.job, self.w
        if p.knobs.keepalive:
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
        await self._added(index, reasoning_item(item_id, p, done=False))
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
        return await self._done(index, reasoning_item(item_id, p, done=True))

    async def _image(self, index: int, i: int, image: str) -> dict[str, Any]:
        w = self.w
        item_id = self.job.item_id("ig", i)
        await self._added(index, image_item(item_id, image, done=False))
        for stage in ("in_progress", "generating"):
            await self._pace()
            await w.event(
                f"response.image_generation_call.{stage}", item_id=item_id, output_index=index
            )
        await w.event(
            "response.image_generation_call.completed", item_id=item_id, output_index=index
        )
        return await self._done(index, image_item(item_id, image, done=True))

    async def _function_call(self, index: int, i: int, call: FunctionCall) -> dict[str, Any]:
        w = self.w
        item_id = self.job.item_id("fc", i)
        await self._added(index, call_item(item_id, call, done=False))
        for chunk in arg_chunks(call[2]):
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
        return await self._done(index, call_item(item_id, call, done=True))

    async def _message(self, index: int, output: list[dict[str, Any]]) -> bool:
        """Stream the message item; False if the stream ended inside it (fault)."""
        p, w = self.plan, self.w
        item_id = self.job.item_id("msg")
        ids: dict[str, Any] = {"output_index": index, "item_id": item_id, "content_index": 0}
        await self._added(index, message_item(item_id, "in_progress", None, []))
        await w.event("response.content_part.added", **ids, part=output_text_part("", []))
        handmade = p.knobs.split_surrogates
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
        annotations = url_annotations(p)
        for k, annotation in enumerate(annotations):
            await w.event(
                "response.output_text.annotation.added",
                **ids,
                annotation_index=k,
                annotation=annotation,
            )
        await w.event("response.output_text.done", **ids, text=p.text, logprobs=[])
        part = output_text_part(p.text, annotations)
        await w.event("response.content_part.done", **ids, part=part)
        status = "incomplete" if p.terminal == "incomplete" else "completed"
        output.append(await self._done(index, message_item(item_id, status, p.text, annotations)))
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
            raise Dropped
        # In-band errors: the partial message is left unfinished.
        partial_item = message_item(item_id, "incomplete", p.text, [])
        if scenario == "failed":
            final = self.job.final_response()
            final["output"] = [*output, partial_item]
            await w.event("response.failed", response=final)
        elif scenario == "response-error":
            error = {"code": error_code(p), "message": PROVIDER_ERROR_MESSAGE}
            await w.event("response.error", error=error)
        elif p.knobs.error_shape == "nested":
            error = {"code": error_code(p), "message": PROVIDER_ERROR_MESSAGE}
            await w.event("error", error=error)
        else:
            await w.event("error", code=error_code(p), message=PROVIDER_ERROR_MESSAGE, param=None)
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
