"""What the mock reads from a request, and what it remembers of the requests it served.

Owns the request side of the mock: ``X-Mock-Params`` merged into the
``mock.*`` parameters, the checks OpenRouter would answer with a 400
(``input_problem``), the tool outputs and tool names a plan depends on, and
``MockStats`` (the server's counters, and the newest requests as
``/mock/requests`` serves them, each cut down by ``summarize_input``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from orpipe.bench.mock_scenarios import PARAM_PREFIX

if TYPE_CHECKING:
    from orpipe.bench.mock_responses import Job

__all__ = [
    "RECENT_REQUESTS",
    "SUMMARY_TEXT_CHARS",
    "MockStats",
    "count_tool_outputs",
    "input_problem",
    "summarize_input",
    "tool_names",
    "with_header_params",
]

#: How many requests ``/mock/requests`` remembers (the newest).
RECENT_REQUESTS: Final = 200
#: Longest text kept per input item in ``/mock/requests`` (characters).
SUMMARY_TEXT_CHARS: Final = 400


@dataclass
class MockStats:
    """Counters of one server. Mutated only from the server's trio tasks."""

    requests_total: int = 0
    requests_by_scenario: dict[str, int] = field(default_factory=dict)
    streams_active: int = 0
    #: The most streams ever open at once (the workers bench checks the global limit with it).
    streams_peak: int = 0
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
            "streams_peak": self.streams_peak,
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

    def record_request(self, scenario: str, request: Mapping[str, Any], job: Job | None) -> None:
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


def with_header_params(
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


def input_problem(items: object) -> str:
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


def count_tool_outputs(request: Mapping[str, Any]) -> int:
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


def tool_names(request: Mapping[str, Any]) -> list[str]:
    tools = request.get("tools")
    if not isinstance(tools, list):
        return []
    return [
        t["name"]
        for t in tools
        if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("name"), str)
    ]
