"""What the mock's answers are made of: the output items, and one request's response object.

Owns the shapes shared by the streaming and the JSON paths (contract 1.7): the
message, reasoning, image and function-call items, citations as
``url_citation`` annotations, and ``Job`` (one request's ids and its
``response`` object, the terminal response when the whole plan was sent).
*What* goes in them is the plan's (``bench.mock_scenarios.plan``); how it is
written on the wire is ``bench.mock_sse``'s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from orpipe.bench.mock_scenarios import FunctionCall, ScenarioPlan

__all__ = [
    "PROVIDER_ERROR_MESSAGE",
    "Job",
    "arg_chunks",
    "call_item",
    "error_code",
    "image_item",
    "message_item",
    "output_text_part",
    "reasoning_item",
    "url_annotations",
]


def output_text_part(text: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


def message_item(
    item_id: str, status: str, text: str | None, annotations: list[dict[str, Any]]
) -> dict[str, Any]:
    content = [] if text is None else [output_text_part(text, annotations)]
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": content,
    }


def reasoning_item(item_id: str, p: ScenarioPlan, *, done: bool) -> dict[str, Any]:
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


def image_item(item_id: str, image: str, *, done: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "image_generation_call",
        "id": item_id,
        "status": "completed" if done else "in_progress",
    }
    if done:
        item.update(result=image, output_format="png")
    return item


def call_item(item_id: str, call: FunctionCall, *, done: bool) -> dict[str, Any]:
    call_id, name, arguments = call
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments if done else "",
        "status": "completed" if done else "in_progress",
    }


def url_annotations(p: ScenarioPlan) -> list[dict[str, Any]]:
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


def arg_chunks(arguments: str, parts: int = 4) -> list[str]:
    size = max(1, -(-len(arguments) // parts))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


def error_code(p: ScenarioPlan) -> int | str:
    return 502 if p.knobs.code_style == "int" else "server_error"


PROVIDER_ERROR_MESSAGE: Final = "The model provider returned an error"


@dataclass
class Job:
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
            output.append(reasoning_item(self.item_id("rs"), p, done=True))
        for i, image in enumerate(p.images):
            output.append(image_item(self.item_id("ig", i), image, done=True))
        for i, call in enumerate(p.function_calls):
            output.append(call_item(self.item_id("fc", i), call, done=True))
        if not p.function_calls:
            status = "incomplete" if p.terminal in ("incomplete", "failed") else "completed"
            output.append(message_item(self.item_id("msg"), status, p.text, url_annotations(p)))
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
