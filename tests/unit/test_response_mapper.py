"""ResponseMapper: every event family of contract §1.9, usage, and every ending."""

from __future__ import annotations

from typing import Any

import pytest

from orpipe.actors.response_mapper import ResponseMapper
from orpipe.engine.errors import (
    RequestDeadlineExceeded,
    UpstreamProtocolError,
    UpstreamResponseFailed,
    UpstreamTimeout,
)
from orpipe.engine.messages import (
    Cancelled,
    Citation,
    Completed,
    Failed,
    Incomplete,
    Notice,
    OutputItem,
    ReasoningDelta,
    Status,
    TextDelta,
    Usage,
)
from orpipe.engine.pipeline_messages import ParseFailed, StreamEnded, TextRun, UpstreamEvent

RID = "req1"
_seq = iter(range(10**9))


def ev(kind: str, **data: Any) -> UpstreamEvent:
    """An UpstreamEvent as the decoder makes it (data holds ``type`` too)."""
    return UpstreamEvent(seq=next(_seq), type=kind, data={"type": kind, **data})


def text(value: str, channel: str = "text", events: int = 1) -> TextRun:
    return TextRun(request_id=RID, channel=channel, text=value, events=events)  # type: ignore[arg-type]


def end(**kwargs: Any) -> StreamEnded:
    return StreamEnded(request_id=RID, seq=0, **kwargs)


def run(*items: Any) -> tuple[ResponseMapper, list[Any]]:
    mapper = ResponseMapper(RID)
    out: list[Any] = []
    for item in items:
        out.extend(mapper.map(item))
    return mapper, out


def finish(mapper: ResponseMapper, ended: StreamEnded | None = None) -> tuple[list[Any], Any]:
    return mapper.finish(ended or end())


# --- deltas ------------------------------------------------------------------


def test_text_and_reasoning_runs() -> None:
    mapper, out = run(text("Hel"), text("think", "reasoning"), text("lo"))
    assert out == [
        TextDelta(request_id=RID, text="Hel"),
        ReasoningDelta(request_id=RID, text="think"),
        TextDelta(request_id=RID, text="lo"),
    ]
    assert mapper.text_chars == 5
    assert mapper.reasoning_chars == 5


def test_summary_parts_are_separated_like_paragraphs() -> None:
    _, out = run(
        ev("response.reasoning_summary_part.added", summary_index=0, part={}),
        text("first", "reasoning"),
        ev("response.reasoning_summary_part.done", summary_index=0),
        ev("response.reasoning_summary_part.added", summary_index=1, part={}),
        text("second", "reasoning"),
    )
    assert [e.text for e in out] == ["first", "\n\n", "second"]


QUIET = [
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.content_part.done",
    "response.output_text.done",
    "response.refusal.done",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.done",
    "response.reasoning_text.done",
    "response.debug",
    "response.image_generation_call.partial_image",
    "response.image_generation_call.completed",
    "response.code_interpreter_call.in_progress",
    "response.code_interpreter_call_code.delta",
    "response.custom_tool_call_input.delta",
    "response.apply_patch_call_operation_diff.delta",
    "response.fusion_call.completed",
    "response.file_search_call.searching",
    "response.mcp_call.in_progress",
]


@pytest.mark.parametrize("kind", QUIET)
def test_quiet_catalogue_events_give_nothing_and_are_not_unknown(kind: str) -> None:
    mapper, out = run(ev(kind, item_id="i", output_index=0))
    assert out == []
    assert not mapper.unknown_types


def test_unknown_types_are_counted_and_ignored() -> None:
    mapper, out = run(ev("response.queued"), ev("response.queued"), ev("response.new_thing"))
    assert out == []
    assert mapper.unknown_types == {"response.queued": 2, "response.new_thing": 1}


def test_created_gives_the_response_id() -> None:
    mapper, out = run(ev("response.created", response={"id": "resp_1", "status": "in_progress"}))
    assert out == [] and mapper.response_id == "resp_1"
    run_id = run(ev("response.created", response={"id": 5}))[0].response_id
    assert run_id is None
    assert run(ev("response.created", response="nope"))[0].response_id is None


# --- output items, citations, web search ------------------------------------


def test_finished_non_message_items_become_output_items() -> None:
    reasoning = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text"}]}
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}
    _, out = run(
        ev("response.output_item.done", output_index=0, item=reasoning),
        ev("response.output_item.done", output_index=1, item={"type": "message", "content": []}),
        ev("response.output_item.done", output_index=2, item=call),
        ev("response.output_item.done", output_index=3, item={"no": "type"}),
        ev("response.output_item.done", output_index=4, item="garbage"),
    )
    assert out == [
        OutputItem(request_id=RID, item=reasoning),
        OutputItem(request_id=RID, item=call),
    ]


def _annotation(**fields: Any) -> UpstreamEvent:
    return ev("response.output_text.annotation.added", annotation_index=0, annotation=fields)


def test_citations_are_deduplicated_by_url() -> None:
    _, out = run(
        _annotation(
            type="url_citation", url="https://a.example", title="A", start_index=1, end_index=9
        ),
        _annotation(type="url_citation", url="https://a.example", title="A again"),
        _annotation(type="url_citation", url="https://b.example"),
        _annotation(
            type="url_citation", url="https://c.example", title="", start_index="x", end_index=True
        ),
        _annotation(type="file_citation", file_id="f", filename="x.pdf", index=0),
        _annotation(type="url_citation", url=""),
        _annotation(type="url_citation", url=None),
        ev("response.output_text.annotation.added", annotation="not a dict"),
    )
    assert out == [
        Citation(request_id=RID, url="https://a.example", title="A", start_index=1, end_index=9),
        Citation(request_id=RID, url="https://b.example", title="https://b.example"),
        Citation(request_id=RID, url="https://c.example", title="https://c.example"),
    ]


def test_web_search_status_reports_changes_only_and_finish_closes_it() -> None:
    mapper, out = run(
        ev("response.web_search_call.in_progress", item_id="ws"),
        ev("response.web_search_call.searching", item_id="ws"),
        ev("response.web_search_call.completed", item_id="ws"),
        ev("response.web_search_call.completed", item_id="ws"),
        ev("response.web_search_call.in_progress", item_id="ws2"),
    )
    searching = "Searching the web…"
    assert out == [
        Status(request_id=RID, description=searching, done=False),
        Status(request_id=RID, description=searching, done=True),
        Status(request_id=RID, description=searching, done=False),
    ]
    closing, _ = finish(mapper)
    assert closing == [Status(request_id=RID, description=searching, done=True)]
    assert finish(run()[0])[0] == []  # nothing open: nothing to close


def test_parse_failure_gives_one_notice() -> None:
    mapper, out = run(
        ParseFailed(seq=1, reason="invalid UTF-8", size=3),
        ParseFailed(seq=2, reason="malformed JSON", size=3),
    )
    assert len(out) == 1 and isinstance(out[0], Notice)
    assert "invalid UTF-8" in out[0].message
    assert mapper.parse_failures == 2


# --- usage --------------------------------------------------------------------


def _completed(usage: Any, **response: Any) -> UpstreamEvent:
    return ev("response.completed", response={"status": "completed", "usage": usage, **response})


def test_usage_with_cost_and_token_details() -> None:
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 150,
        "cost": 0.0123,
        "is_byok": False,
    }
    _, out = run(_completed(usage))
    assert out == [
        Usage(
            request_id=RID,
            input_tokens=100,
            output_tokens=50,
            total_tokens=150,
            cached_tokens=40,
            reasoning_tokens=20,
            cost=0.0123,
        )
    ]


def test_usage_with_integer_cost_and_missing_total() -> None:
    _, out = run(_completed({"input_tokens": 3, "output_tokens": 4, "cost": 2}))
    assert out == [Usage(request_id=RID, input_tokens=3, output_tokens=4, total_tokens=7, cost=2.0)]
    assert isinstance(out[0].cost, float)


@pytest.mark.parametrize(
    "usage",
    [
        {
            "input_tokens": "100",
            "output_tokens": None,
            "total_tokens": True,
            "input_tokens_details": {"cached_tokens": 1.5},
            "output_tokens_details": "x",
            "cost": "0.5",
        },
        {"input_tokens_details": None, "output_tokens_details": [], "cost": True},
        {"cost": None},
    ],
)
def test_usage_with_garbage_values(usage: dict[str, Any]) -> None:
    _, out = run(_completed(usage))
    assert out == [Usage(request_id=RID, input_tokens=0, output_tokens=0, total_tokens=0)]


def test_no_usage_object_gives_no_usage_event() -> None:
    for usage in (None, "x", 3):
        assert run(_completed(usage))[1] == []


# --- endings -----------------------------------------------------------------


def test_completed() -> None:
    mapper, _ = run(
        ev("response.created", response={"id": "resp_9"}),
        text("hello"),
        _completed(None, id="resp_9"),
    )
    closing, ending = finish(mapper)
    assert closing == []
    assert ending == Completed(request_id=RID, response_id="resp_9", text_chars=5)


def test_completed_takes_the_id_from_the_terminal_event() -> None:
    mapper, _ = run(_completed(None, id="resp_late"))
    assert finish(mapper)[1].response_id == "resp_late"


@pytest.mark.parametrize(
    ("details", "reason", "phrase"),
    [
        ({"reason": "max_output_tokens"}, "max_output_tokens", "output token limit"),
        ({"reason": "content_filter"}, "content_filter", "content filter"),
        ({"reason": "other"}, "other", "(other)"),
        (None, "unknown", "(unknown)"),
    ],
)
def test_incomplete(details: Any, reason: str, phrase: str) -> None:
    mapper, out = run(
        text("partial"),
        ev("response.incomplete", response={"status": "incomplete", "incomplete_details": details}),
    )
    assert out == [TextDelta(request_id=RID, text="partial")]
    ending = finish(mapper)[1]
    assert isinstance(ending, Incomplete)
    assert ending.reason == reason
    assert phrase in ending.message


def test_response_failed() -> None:
    mapper, out = run(
        ev(
            "response.failed",
            response={
                "status": "failed",
                "error": {"code": "server_error", "message": "model exploded"},
                "error_type": "provider_unavailable",
                "usage": {"input_tokens": 1, "output_tokens": 0, "total_tokens": 1},
            },
        )
    )
    assert [type(e) for e in out] == [Usage]
    ending = finish(mapper)[1]
    assert isinstance(ending, Failed)
    assert isinstance(ending.error, UpstreamResponseFailed)
    assert (ending.error.code, ending.error.detail, ending.error.error_type) == (
        "server_error",
        "model exploded",
        "provider_unavailable",
    )
    assert "model exploded" in ending.message


def test_response_failed_without_details() -> None:
    ending = finish(run(ev("response.failed", response=None))[0])[1]
    assert isinstance(ending, Failed)
    assert ending.error.code is None
    assert ending.error.detail == "no reason given"


@pytest.mark.parametrize(
    ("data", "code", "detail"),
    [
        (
            {"code": "rate_limit_exceeded", "message": "slow down", "param": None},
            "rate_limit_exceeded",
            "slow down",
        ),
        ({"code": None, "message": "top-level, null code"}, None, "top-level, null code"),
        ({"error": {"code": 502, "message": "nested int"}}, 502, "nested int"),
        (
            {"error": {"code": "server_error", "message": "nested str"}},
            "server_error",
            "nested str",
        ),
        ({"error": {"code": True}}, None, "no reason given"),
        ({}, None, "no reason given"),
    ],
)
@pytest.mark.parametrize("kind", ["error", "response.error"])
def test_error_events(kind: str, data: dict[str, Any], code: Any, detail: str) -> None:
    mapper, out = run(ev(kind, **data))
    assert out == []
    ending = finish(mapper)[1]
    assert isinstance(ending, Failed)
    assert isinstance(ending.error, UpstreamResponseFailed)
    assert ending.error.code == code
    assert ending.error.detail == detail


def test_error_event_type_is_kept() -> None:
    mapper, _ = run(ev("error", error={"code": 429, "message": "x"}, error_type="rate_limit"))
    assert finish(mapper)[1].error.error_type == "rate_limit"


def test_failure_after_text_reports_the_partial_character_count() -> None:
    mapper, _ = run(text("x" * 1234), ev("error", code="server_error", message="boom"))
    ending = finish(mapper)[1]
    assert isinstance(ending, Failed)
    assert "1,234 characters" in ending.message


def test_no_terminal_event_is_a_failure() -> None:
    ending = finish(run(text("abc"))[0])[1]
    assert isinstance(ending, Failed)
    assert isinstance(ending.error, UpstreamProtocolError)
    assert "without finishing" in ending.message
    assert "3 characters" in ending.message


def test_no_terminal_and_no_text() -> None:
    ending = finish(run()[0])[1]
    assert isinstance(ending, Failed)
    assert "characters" not in ending.message


def test_stream_failure_with_partial_text() -> None:
    error = UpstreamTimeout("idle read", 300)
    mapper, _ = run(text("y" * 2000))
    ending = finish(mapper, end(failure=error))[1]
    assert isinstance(ending, Failed)
    assert ending.error is error
    assert ending.message.startswith(error.message)
    assert "2,000 characters" in ending.message


def test_deadline_failure_has_no_partial_count() -> None:
    error = RequestDeadlineExceeded(1800)
    ending = finish(run(text("abc"))[0], end(failure=error))[1]
    assert isinstance(ending, Failed)
    assert ending.message == error.message


def test_cancelled() -> None:
    mapper, _ = run(text("abc"))
    assert finish(mapper, end(cancel_reason="the consumer closed the stream"))[1] == Cancelled(
        request_id=RID, reason="the consumer closed the stream"
    )


def test_terminal_event_wins_over_a_later_cancel_or_failure() -> None:
    mapper, _ = run(_completed(None, id="r"))
    assert isinstance(finish(mapper, end(cancel_reason="late"))[1], Completed)
    mapper, _ = run(_completed(None, id="r"))
    assert isinstance(finish(mapper, end(failure=UpstreamTimeout("read", 1)))[1], Completed)


@pytest.mark.parametrize(
    "terminal",
    [
        _completed({"input_tokens": 1}),
        ev("response.incomplete", response={"incomplete_details": {"reason": "x"}}),
        ev("response.failed", response={}),
        ev("error", code="x", message="y"),
        ev("response.error", error={"code": 1, "message": "y"}),
    ],
)
def test_nothing_after_the_terminal_event(terminal: UpstreamEvent) -> None:
    mapper, _ = run(text("a"), terminal)
    before = finish(mapper)[1]
    after = []
    for item in (
        text("more"),
        text("more", "reasoning"),
        ParseFailed(seq=99, reason="x", size=1),
        _annotation(type="url_citation", url="https://late.example"),
        ev("response.output_item.done", item={"type": "function_call"}),
        ev("response.web_search_call.in_progress"),
        ev("response.completed", response={"id": "other"}),
        ev("error", code="late"),
        ev("response.unknown"),
    ):
        after.extend(mapper.map(item))
    assert after == []
    assert mapper.text_chars == 1
    assert not mapper.unknown_types
    assert finish(mapper)[1] == before
