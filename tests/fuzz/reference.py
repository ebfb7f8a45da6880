"""A by-the-book reading of a scripted response, to check the generator (not the engine).

``reference_answer`` parses an attempt's wire bytes as an HTTP client would
(h11), reads the body with the WHATWG SSE algorithm (``tests.fuzz.sse``) and
applies the Responses contract (§1.9): text and reasoning deltas until the
first terminal event. The harness's self-check asserts that this reading
gives exactly what a case's ``Expect`` demands of the engine, so a mismatch
reported against the engine is never the generator's own mistake.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import h11

from tests.fuzz.script import Attempt, Sleep
from tests.fuzz.sse import reference_events
from tests.fuzz.streams import join_halves

__all__ = ["Answer", "reference_answer"]

_TERMINAL = {
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
    "response.error",
}


@dataclass(slots=True)
class Answer:
    status: int | None = None
    #: The body as h11 delivered it, and whether the message ended properly.
    body: bytes = b""
    complete: bool = False
    done: bool = False
    text: str = ""
    reasoning: str = ""
    #: The first terminal event's type ("untyped error" for a bare {"error": ...}).
    terminal: str | None = None
    message: str | None = None
    response_id: str | None = None
    usage: tuple[int, int] | None = None
    urls: list[str] = field(default_factory=list)
    unreadable: int = 0


def reference_answer(attempt: Attempt) -> Answer:
    answer = Answer()
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="POST",
            target="/api/v1/responses",
            headers=[("Host", "x"), ("Content-Length", "0")],
        )
    )
    client.send(h11.EndOfMessage())
    wire = b"".join(w for w in attempt.wire if not isinstance(w, Sleep))
    client.receive_data(wire)
    if attempt.end in ("close", "reset"):
        client.receive_data(b"")
    body = bytearray()
    try:
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                answer.status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                answer.complete = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
    except h11.RemoteProtocolError:
        pass
    answer.body = bytes(body)
    if answer.status != 200:
        return answer
    payloads, answer.done = reference_events(answer.body)
    text: list[str] = []
    reasoning: list[str] = []
    for payload in payloads:
        try:
            data: Any = json.loads(payload)
        except (ValueError, RecursionError):  # deeply nested: unreadable, not a crash
            answer.unreadable += 1
            continue
        if not isinstance(data, dict):
            answer.unreadable += 1
            continue
        kind = data.get("type")
        if kind is None and isinstance(data.get("error"), dict):
            kind = "untyped error"
        if not isinstance(kind, str):
            answer.unreadable += 1
            continue
        if kind in _TERMINAL or kind == "untyped error":
            _terminal(answer, kind, data)
            break
        _event(answer, kind, data, text, reasoning)
    answer.text = join_halves("".join(text))
    answer.reasoning = join_halves("".join(reasoning))
    return answer


def _event(
    answer: Answer, kind: str, data: dict[str, Any], text: list[str], reasoning: list[str]
) -> None:
    delta = data.get("delta")
    if kind == "response.output_text.delta" and isinstance(delta, str):
        text.append(delta)
    elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        if isinstance(delta, str):
            reasoning.append(delta)
    elif kind == "response.reasoning_summary_part.added" and "".join(reasoning):
        reasoning.append("\n\n")
    elif kind == "response.output_text.annotation.added":
        annotation = data.get("annotation")
        if isinstance(annotation, dict) and annotation.get("type") == "url_citation":
            url = annotation.get("url")
            if isinstance(url, str) and url not in answer.urls:
                answer.urls.append(url)
    elif kind == "response.created":
        response = data.get("response")
        if isinstance(response, dict) and isinstance(response.get("id"), str):
            answer.response_id = response["id"]


def _terminal(answer: Answer, kind: str, data: dict[str, Any]) -> None:
    answer.terminal = kind
    response = data.get("response")
    if isinstance(response, dict):
        if isinstance(response.get("id"), str):
            answer.response_id = response["id"]
        usage = response.get("usage")
        if isinstance(usage, dict):
            answer.usage = (usage["input_tokens"], usage["output_tokens"])
        error = response.get("error")
        if isinstance(error, dict):
            answer.message = error.get("message")
    nested = data.get("error")
    if isinstance(nested, dict):
        answer.message = nested.get("message")
    elif isinstance(data.get("message"), str):
        answer.message = data["message"]
