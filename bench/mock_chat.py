"""The mock's ``/chat/completions``: the same plan in the Chat Completions shape.

Owns the JSON answer (``chat_completion``) and the stream (``ChatStreamRun``:
one ``chat.completion.chunk`` per delta, paced as the Responses stream of the
same plan is, then a chunk with ``finish_reason``, one with ``usage``, and
``[DONE]``, as OpenRouter ends its streams), for clients that speak only
that API, such as Open WebUI's own OpenAI connection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from orpipe.bench.mock_responses import Job
from orpipe.bench.mock_scenarios import ScenarioPlan
from orpipe.bench.mock_sse import Pacer, SseWriter

__all__ = ["ChatStreamRun", "chat_completion"]

_encode = msgspec.json.Encoder().encode


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


def chat_completion(job: Job) -> dict[str, Any]:
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


class ChatStreamRun:
    """Writes one streaming ``/chat/completions`` answer: a chunk per delta, paced as the
    Responses stream of the same plan is, then the finish chunk, the usage chunk, [DONE]."""

    def __init__(self, job: Job, writer: SseWriter) -> None:
        self.job = job
        self.plan = job.plan
        self.w = writer
        self._pacer = Pacer(job.plan, writer)
        self._created = int(time.time())
        # Lone surrogates (split_surrogates) can only be written as JSON escapes.
        self._dumps: Callable[[object], bytes] = (
            (lambda obj: json.dumps(obj).encode()) if job.plan.knobs.split_surrogates else _encode
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
        if p.knobs.keepalive:
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
