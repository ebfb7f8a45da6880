"""What Open WebUI sees: chunks and events from the renderer, and the safe emitter.

The renderer tests are plain synchronous tests with a hand-driven clock. The
``SafeEmitter`` tests run a real loop, asyncio and uvloop (``loop_kind``),
through ``asyncio_support.run_on``.
"""

from __future__ import annotations

import asyncio
import logging
from types import MappingProxyType
from typing import Any

import pytest

from orpipe.adapters.openwebui.answer_renderer import AnswerRenderer, Output
from orpipe.adapters.openwebui.artifact_replay import referenced_ids, select_orphans
from orpipe.adapters.openwebui.completion_chunks import busy_error_chunk, error_chunk
from orpipe.adapters.openwebui.events import source_event, strip_openai_utm
from orpipe.adapters.openwebui.final_status import UsageTotals, format_final_status
from orpipe.adapters.openwebui.safe_emitter import SafeEmitter
from orpipe.adapters.openwebui.statuses import STOPPED, WAITING, StatusHistory, closed_text
from orpipe.engine.artifacts import Artifact
from orpipe.engine.errors import UpstreamHTTPError
from orpipe.engine.messages import (
    Cancelled,
    Citation,
    Completed,
    Ending,
    Failed,
    Incomplete,
    Notice,
    OutboundEvent,
    OutputItem,
    ReasoningDelta,
    Status,
    TextDelta,
    Usage,
)
from tests.adapters.asyncio_support import run_on

RID = "r1"
WALL = 1_700_000_000.0  # 2023-11-14 UTC
CHUNK_ID = f"chatcmpl-{RID}"
ITEM: dict[str, Any] = {"chat_id": "c1", "message_id": "m1", "payload": {"type": "reasoning"}}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def renderer_for(clock: FakeClock, *, show_final_status: bool = True) -> AnswerRenderer:
    return AnswerRenderer(
        show_final_status=show_final_status,
        model="orpipe.test-model",
        clock=clock,
        wall_clock=lambda: WALL,
    )


def chunk(*, delta: dict[str, Any] | None = None, usage: dict[str, Any] | None = None) -> Any:
    expected: dict[str, Any] = {
        "id": CHUNK_ID,
        "object": "chat.completion.chunk",
        "created": int(WALL),
        "model": "orpipe.test-model",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    if usage is not None:
        expected["usage"] = usage
    return Output.to_yield(expected)


def status(description: str, *, done: bool) -> Output:
    return Output.to_emit({"type": "status", "data": {"description": description, "done": done}})


def usage(**counts: Any) -> Usage:
    return Usage(request_id=RID, **counts)


def feed(renderer: AnswerRenderer, *events: OutboundEvent) -> list[Output]:
    return [out for event in events for out in renderer.feed(event)]


def events_of(outputs: list[Output], kind: str) -> list[dict[str, Any]]:
    return [o.event["data"] for o in outputs if o.kind == "event" and o.event["type"] == kind]


def chunks_of(outputs: list[Output]) -> list[dict[str, Any]]:
    return [o.chunk for o in outputs if o.chunk is not None]


def assert_clean_history(statuses: list[dict[str, Any]]) -> None:
    """What Open WebUI lists under the status line reads well: every entry has text
    (no blank dot), none is hidden (also a blank dot), no text is listed twice."""
    texts = [s.get("description") for s in statuses]
    assert all(isinstance(t, str) and t.strip() for t in texts), statuses
    assert not any(s.get("hidden") for s in statuses), statuses
    assert len(set(texts)) == len(texts), texts


ENDINGS: dict[str, Ending] = {
    "completed": Completed(request_id=RID, response_id="resp_1", text_chars=2),
    "incomplete": Incomplete(
        request_id=RID, reason="max_output_tokens", message="The answer was cut short."
    ),
    "failed": Failed(
        request_id=RID,
        error=UpstreamHTTPError(502, code=502, detail="bad gateway"),
        message="The model provider is down; retry.",
    ),
    "cancelled": Cancelled(request_id=RID, reason="stopped"),
}


# -- deltas ----------------------------------------------------------------------------


def test_text_becomes_a_content_chunk(clock: FakeClock) -> None:
    renderer = renderer_for(clock)

    assert renderer.feed(TextDelta(request_id=RID, text="Hello")) == [
        chunk(delta={"content": "Hello"})
    ]
    assert renderer.answer_text == "Hello"


def test_reasoning_is_the_thinking_block_and_no_status(clock: FakeClock) -> None:
    """Open WebUI's block says "Thinking…" and "Thought for N seconds": no status repeats it."""
    renderer = renderer_for(clock)

    first = renderer.feed(ReasoningDelta(request_id=RID, text="Let me see"))
    clock.now = 1.5
    second = renderer.feed(ReasoningDelta(request_id=RID, text=" more"))
    clock.now = 2.0
    text = renderer.feed(TextDelta(request_id=RID, text="Answer"))

    assert first == [chunk(delta={"reasoning_content": "Let me see"})]
    assert second == [chunk(delta={"reasoning_content": " more"})]
    assert text == [chunk(delta={"content": "Answer"})]
    assert renderer.reasoning_text == "Let me see more"
    assert renderer.open_status is None


def test_empty_deltas_and_output_items_show_nothing(clock: FakeClock) -> None:
    renderer = renderer_for(clock)

    assert (
        feed(
            renderer,
            TextDelta(request_id=RID, text=""),
            ReasoningDelta(request_id=RID, text=""),
            OutputItem(request_id=RID, item={"type": "function_call"}),
        )
        == []
    )
    assert renderer.open_status is None


def test_artifacts_not_written_when_the_answer_ended_are_left_out_and_become_orphans(
    clock: FakeClock,
) -> None:
    """Read-after-write across workers: only written artifacts are referenced; the
    next turn (on any worker) replays a late-written one through the orphan path."""
    renderer = renderer_for(clock)
    written, late = Artifact(**ITEM, item_type="reasoning"), Artifact(**ITEM, item_type="reasoning")
    feed(
        renderer,
        TextDelta(request_id=RID, text="The answer."),
        OutputItem(request_id=RID, item={"type": "reasoning"}, artifact_id=written.artifact_id),
        OutputItem(request_id=RID, item={"type": "reasoning"}, artifact_id=late.artifact_id),
        Completed(
            request_id=RID,
            response_id="resp",
            text_chars=11,
            unwritten_artifact_ids=(late.artifact_id,),
        ),
    )
    assert renderer.artifact_ids == (written.artifact_id,)
    history = [{"role": "assistant", "content": renderer.content_text}]
    referenced = referenced_ids(history)
    assert referenced == [written.artifact_id]
    # The late one reaches the store after all: the next turn finds it unreferenced.
    orphans = select_orphans([written, late], referenced=referenced, previous_message_id="m1")
    assert orphans == (late,)


def test_engine_status_and_notice_become_events(clock: FakeClock) -> None:
    renderer = renderer_for(clock)

    outputs = feed(
        renderer,
        Status(request_id=RID, description="Searching the web", done=False),
        Notice(request_id=RID, message="An event was skipped."),
    )

    assert outputs == [
        status("Searching the web", done=False),
        Output.to_emit(
            {
                "type": "notification",
                "data": {"type": "warning", "content": "An event was skipped."},
            }
        ),
    ]
    assert renderer.open_status == "Searching the web"


# -- the status history -------------------------------------------------------------------


def test_the_history_sends_nothing_blank_or_hidden() -> None:
    history = StatusHistory()
    assert history.entry({"description": "", "done": True}) is None
    assert history.entry({"description": "   ", "done": False}) is None
    assert history.entry({"done": True}) is None
    assert history.entry({"description": "x", "done": True, "hidden": True}) is None
    assert history.open is None


def test_a_status_closed_with_its_own_text_gets_its_closing_line() -> None:
    history = StatusHistory()
    opened = history.entry({"description": "Searching the web…", "done": False, "action": "x"})
    assert opened == {"description": "Searching the web…", "done": False, "action": "x"}
    assert history.open == "Searching the web…"
    closed = history.entry({"description": "Searching the web…", "done": True, "action": "x"})
    assert closed == {"description": "Searched the web", "done": True, "action": "x"}
    assert history.open is None


def test_a_repeated_text_is_numbered() -> None:
    history = StatusHistory()
    sent = [
        history.entry({"description": d, "done": done})
        for d, done in [
            ("Calling f…", False),
            ("Calling f…", False),
            ("f finished in 3 ms", True),
            ("f finished in 3 ms", True),
            ("Calling f…", False),
        ]
    ]
    assert [e["description"] for e in sent if e] == [
        "Calling f…",
        "Calling f (2)…",
        "f finished in 3 ms",
        "f finished in 3 ms (2)",
        "Calling f (3)…",
    ]
    assert history.open == "Calling f (3)…"


@pytest.mark.parametrize(
    ("description", "closed"),
    [
        ("Searching the web…", "Searched the web"),
        ("Preparing attachments…", "Attachments prepared"),
        (WAITING, "OpenRouter responded"),
        ("Calling get_weather…", "Calling get_weather: done"),
        ("Reading", "Reading: done"),
    ],
)
def test_closing_lines(description: str, closed: str) -> None:
    assert closed_text(description) == closed


def test_the_wait_is_replaced_by_a_status_of_its_own(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    assert renderer.opening() == [status(WAITING, done=False)]
    assert renderer.opening() == []  # once
    clock.now = 1.0
    searching = Status(request_id=RID, description="Searching the web…", done=False)
    assert renderer.feed(searching) == [status("Searching the web…", done=False)]


def test_the_wait_ends_with_a_line_when_something_else_comes_first(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    renderer.opening()
    clock.now = 0.84
    assert renderer.feed(ReasoningDelta(request_id=RID, text="hmm")) == [
        status("OpenRouter responded in 0.84 s", done=True),
        chunk(delta={"reasoning_content": "hmm"}),
    ]
    assert renderer.open_status is None
    assert renderer.feed(TextDelta(request_id=RID, text="ok")) == [chunk(delta={"content": "ok"})]


def test_a_follow_up_calls_wait_lines_carry_its_round(clock: FakeClock) -> None:
    """Open WebUI's follow-up call (pass-through) adds to the same message's list."""
    renderer = AnswerRenderer(clock=clock, wall_clock=lambda: WALL, tool_round=2)
    assert renderer.opening() == [status("Waiting for OpenRouter (round 2)…", done=False)]
    clock.now = 0.5
    assert renderer.feed(TextDelta(request_id=RID, text="ok"))[0] == status(
        "OpenRouter responded in 0.50 s (round 2)", done=True
    )


def test_nothing_shown_does_not_end_the_wait(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    renderer.opening()
    empty = TextDelta(request_id=RID, text="")
    assert feed(renderer, usage(input_tokens=1, output_tokens=0, total_tokens=1), empty) == []
    assert renderer.open_status == WAITING


# The status events Open WebUI receives for whole answers, through the pipe's loop
# (``owui_chat._chunks``): the renderer's outputs, emitted through a SafeEmitter.

Step = OutboundEvent | float  # a float moves the clock to that time


def delivered_statuses(
    clock: FakeClock, steps: list[Step], loop_kind: str, **renderer: Any
) -> list[dict[str, Any]]:
    recorder = Recorder()
    emitter = SafeEmitter(recorder)
    answer = renderer_for(clock, **renderer)

    async def scenario() -> None:
        for out in answer.opening():
            await emitter.emit(out.event)
        for step in steps:
            if isinstance(step, float):
                clock.now = step
                continue
            for out in answer.feed(step):
                if out.chunk is None:
                    await emitter.emit(out.event)
        await emitter.close_statuses()

    run_on(loop_kind, scenario)
    return [e["data"] for e in recorder.events if e["type"] == "status"]


def text(value: str) -> TextDelta:
    return TextDelta(request_id=RID, text=value)


def engine_status(description: str, *, done: bool) -> Status:
    return Status(request_id=RID, description=description, done=done)


ISSUE_USAGE = usage(
    input_tokens=25, output_tokens=180, total_tokens=205, reasoning_tokens=60, cost=0.0019
)
PLAIN_USAGE = usage(input_tokens=25, output_tokens=180, total_tokens=205, cost=0.0019)
COMPLETED = ENDINGS["completed"]

ANSWERS: dict[str, tuple[list[Step], list[dict[str, Any]]]] = {
    "plain": (
        [0.4, text("Hello"), 3.4, text(" there."), PLAIN_USAGE, 3.5, COMPLETED],
        [
            {"description": WAITING, "done": False},
            {"description": "OpenRouter responded in 0.40 s", "done": True},
            {
                "description": "3.50 s · 60.0 tokens/s · $0.0019 · 205 tokens (25 in, 180 out)",
                "done": True,
            },
        ],
    ),
    "reasoning": (
        [
            0.84,
            ReasoningDelta(request_id=RID, text="Let me think"),
            2.0,
            ReasoningDelta(request_id=RID, text=" about it."),
            3.0,
            text("Answer."),
            6.665,
            text(" More."),
            ISSUE_USAGE,
            7.0,
            COMPLETED,
        ],
        [
            {"description": WAITING, "done": False},
            {"description": "OpenRouter responded in 0.84 s", "done": True},
            {
                "description": (
                    "7.00 s · 30.9 tokens/s · $0.0019 · 205 tokens (25 in, 180 out, 60 reasoning)"
                ),
                "done": True,
            },
        ],
    ),
    "web search": (
        [
            0.5,
            engine_status("Searching the web…", done=False),
            2.0,
            engine_status("Searching the web…", done=True),
            Citation(request_id=RID, url="https://a.example/p", title="A page"),
            2.2,
            text("Found it."),
            5.2,
            text(" Done."),
            PLAIN_USAGE,
            5.5,
            COMPLETED,
        ],
        [
            {"description": WAITING, "done": False},
            {"description": "Searching the web…", "done": False},
            {"description": "Searched the web", "done": True},
            {
                "description": "5.50 s · 60.0 tokens/s · $0.0019 · 205 tokens (25 in, 180 out)",
                "done": True,
            },
        ],
    ),
    "tool calls": (
        [
            1.0,
            OutputItem(request_id=RID, item={"type": "function_call", "name": "get_weather"}),
            engine_status("Calling get_weather…", done=False),
            engine_status("Calling get_weather…", done=False),
            1.1,
            engine_status("get_weather finished in 3 ms", done=True),
            engine_status("get_weather finished in 3 ms", done=True),
            2.0,
            engine_status("Calling get_weather…", done=False),
            engine_status("get_weather finished in 2 ms", done=True),
            2.5,
            text("It is 21 °C."),
            5.5,
            text(" Sunny."),
            PLAIN_USAGE,
            6.0,
            COMPLETED,
        ],
        [
            {"description": WAITING, "done": False},
            {"description": "Calling get_weather…", "done": False},
            {"description": "Calling get_weather (2)…", "done": False},
            {"description": "get_weather finished in 3 ms", "done": True},
            {"description": "get_weather finished in 3 ms (2)", "done": True},
            {"description": "Calling get_weather (3)…", "done": False},
            {"description": "get_weather finished in 2 ms", "done": True},
            {
                "description": "6.00 s · 60.0 tokens/s · $0.0019 · 205 tokens (25 in, 180 out)",
                "done": True,
            },
        ],
    ),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_the_status_history_of_an_answer_is_clean(
    answer: str, clock: FakeClock, loop_kind: str
) -> None:
    """No blank or hidden entry, no line twice, no "Thinking", the final line last."""
    steps, expected = ANSWERS[answer]
    statuses = delivered_statuses(clock, steps, loop_kind)
    assert statuses == expected
    assert_clean_history(statuses)
    assert not any("Thinking" in s["description"] for s in statuses)
    assert statuses[-1]["done"] is True


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_without_the_final_line_the_history_is_clean_too(
    answer: str, clock: FakeClock, loop_kind: str
) -> None:
    steps, expected = ANSWERS[answer]
    statuses = delivered_statuses(clock, steps, loop_kind, show_final_status=False)
    assert statuses == expected[:-1]
    assert_clean_history(statuses)
    assert statuses[-1]["done"] is True


def test_a_reasoning_answer_sends_no_thinking_status(clock: FakeClock, loop_kind: str) -> None:
    """Reasoning only (the answer ends while the model still thinks): still no status."""
    steps: list[Step] = [0.5, ReasoningDelta(request_id=RID, text="Hmm"), 9.0, COMPLETED]
    statuses = delivered_statuses(clock, steps, loop_kind)
    assert [s["description"] for s in statuses] == [
        WAITING,
        "OpenRouter responded in 0.50 s",
        "9.00 s",
    ]


@pytest.mark.parametrize(("name", "last"), [("failed", "Failed"), ("cancelled", "Stopped")])
def test_an_answer_that_ends_before_its_first_event_says_so(
    name: str, last: str, clock: FakeClock, loop_kind: str
) -> None:
    statuses = delivered_statuses(clock, [2.5, ENDINGS[name]], loop_kind)
    assert statuses == [
        {"description": WAITING, "done": False},
        {"description": f"{last} after 2.50 s", "done": True},
    ]


# -- citations --------------------------------------------------------------------------


def cite(url: str, title: str = "A page") -> Citation:
    return Citation(request_id=RID, url=url, title=title)


def test_citations_are_deduplicated_across_utm_variants(clock: FakeClock) -> None:
    renderer = renderer_for(clock)

    outputs = feed(
        renderer,
        cite("https://www.example.com/a?utm_source=openai", "Page A"),
        cite("https://www.example.com/a", "Page A again"),
        cite("https://example.com/b?x=1&utm_source=openai", "Page B"),
        cite("https://example.com/b?x=1"),
    )

    assert events_of(outputs, "source") == [
        {
            "source": {"name": "example.com", "url": "https://www.example.com/a"},
            "document": ["Page A"],
            "metadata": [
                {
                    "source": "https://www.example.com/a",
                    "name": "Page A",
                    "date_accessed": "2023-11-14",
                }
            ],
        },
        {
            "source": {"name": "example.com", "url": "https://example.com/b?x=1"},
            "document": ["Page B"],
            "metadata": [
                {
                    "source": "https://example.com/b?x=1",
                    "name": "Page B",
                    "date_accessed": "2023-11-14",
                }
            ],
        },
    ]
    assert len(outputs) == 2


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://www.wwwidget.com/x", "wwwidget.com"),  # lstrip("www.") gave "idget.com"
        ("https://web.dev/", "web.dev"),  # lstrip("www.") gave "eb.dev"
        ("https://WWW.Example.org:8443/p", "example.org"),
        ("not a url", "not a url"),
        ("http://[::1/broken", "http://[::1/broken"),  # urlsplit raises on this
    ],
)
def test_the_source_name_drops_a_www_prefix_only(url: str, name: str) -> None:
    assert source_event(url, "", accessed="2024-01-01")["data"]["source"]["name"] == name


def test_an_untitled_citation_is_named_by_its_cleaned_url(clock: FakeClock) -> None:
    raw = "https://a.example/p?utm_source=openai"
    outputs = renderer_for(clock).feed(cite(raw, title=raw))  # how the engine titles it
    assert events_of(outputs, "source")[0]["document"] == ["https://a.example/p"]


def test_a_source_without_title_is_named_by_its_url() -> None:
    data = source_event("https://a.example/p", "", accessed="2024-01-01")["data"]
    assert data["document"] == ["https://a.example/p"]
    assert data["metadata"][0]["name"] == "https://a.example/p"


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("https://a.example/p?utm_source=openai", "https://a.example/p"),
        ("https://a.example/p?q=1&utm_source=openai", "https://a.example/p?q=1"),
        ("https://a.example/p?utm_source=openai&q=1#top", "https://a.example/p?q=1#top"),
        ("https://a.example/p?utm_source=openai2", "https://a.example/p?utm_source=openai2"),
        ("https://a.example/p", "https://a.example/p"),
        ("http://[::1/p?utm_source=openai", "http://[::1/p?utm_source=openai"),
    ],
)
def test_strip_openai_utm(url: str, stripped: str) -> None:
    assert strip_openai_utm(url) == stripped


# -- the final status line ---------------------------------------------------------------


FULL = UsageTotals(
    input_tokens=50,
    output_tokens=100,
    total_tokens=150,
    cached_tokens=10,
    reasoning_tokens=20,
    cost=0.00123,
)


def test_final_status_with_everything() -> None:
    assert format_final_status(3.214, FULL, 2.0) == (
        "3.21 s · 50.0 tokens/s · $0.00123 · 150 tokens (50 in, 10 cached, 100 out, 20 reasoning)"
    )


def test_final_status_reads_as_in_the_issue() -> None:
    """Every figure separated, units spelled out once: the line a person reads."""
    usage = UsageTotals(
        input_tokens=25, output_tokens=180, total_tokens=205, reasoning_tokens=60, cost=0.0019
    )
    assert format_final_status(5.987, usage, 180 / 30.9) == (
        "5.99 s · 30.9 tokens/s · $0.0019 · 205 tokens (25 in, 180 out, 60 reasoning)"
    )


def test_final_status_without_cost_cached_or_reasoning() -> None:
    plain = UsageTotals(input_tokens=10, output_tokens=20, total_tokens=30, cost=0.0)
    assert format_final_status(1.0, plain, 2.0) == (
        "1.00 s · 10.0 tokens/s · 30 tokens (10 in, 20 out)"
    )


def test_final_status_without_usage_is_the_time_only() -> None:
    assert format_final_status(1.5, None, 1.0) == "1.50 s"


def test_final_status_counts_have_thousands_separators_and_one_token_is_singular() -> None:
    big = UsageTotals(input_tokens=12_345, output_tokens=1_000, total_tokens=13_345)
    assert format_final_status(61.0, big, None) == (
        "61.00 s · 13,345 tokens (12,345 in, 1,000 out)"
    )
    assert format_final_status(0.25, UsageTotals(input_tokens=1), None) == (
        "0.25 s · 1 token (1 in, 0 out)"
    )


@pytest.mark.parametrize("generation_s", [None, 0.0, -0.5, 0.49])
def test_tps_needs_a_generation_window(generation_s: float | None) -> None:
    assert format_final_status(2.0, FULL, generation_s).startswith("2.00 s · $0.00123 · ")


def test_tps_from_the_shortest_window_shown() -> None:
    assert format_final_status(2.0, FULL, 0.5).startswith("2.00 s · 200.0 tokens/s · $")


def test_tps_needs_output_tokens() -> None:
    no_output = UsageTotals(input_tokens=5, total_tokens=5)
    assert format_final_status(2.0, no_output, 1.0) == "2.00 s · 5 tokens (5 in, 0 out)"


@pytest.mark.parametrize(
    ("cost", "segment"),
    [(0.5, " · $0.5 · "), (2.0, " · $2 · "), (0.1234567, " · $0.123457 · ")],
)
def test_cost_has_six_decimals_with_trailing_zeros_trimmed(cost: float, segment: str) -> None:
    assert segment in format_final_status(1.0, UsageTotals(input_tokens=1, cost=cost), None)


@pytest.mark.parametrize("cost", [None, 0.0, 1e-9])
def test_cost_is_shown_only_when_above_zero(cost: float | None) -> None:
    assert "$" not in format_final_status(1.0, UsageTotals(input_tokens=1, cost=cost), None)


def test_total_falls_back_to_input_plus_output() -> None:
    assert "7 tokens (3 in, 4 out)" in format_final_status(
        1.0, UsageTotals(input_tokens=3, output_tokens=4), None
    )


# -- endings ----------------------------------------------------------------------------


OPENAI_USAGE = {
    "prompt_tokens": 50,
    "completion_tokens": 100,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 10},
    "completion_tokens_details": {"reasoning_tokens": 20},
    "cost": 0.00123,
}


def test_completed_answer_full_flow(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    clock.now = 1.0
    feed(renderer, ReasoningDelta(request_id=RID, text="hmm"))
    clock.now = 2.0
    feed(renderer, TextDelta(request_id=RID, text="4"))
    clock.now = 3.0
    feed(renderer, TextDelta(request_id=RID, text="2"))
    feed(
        renderer,
        usage(
            input_tokens=50,
            output_tokens=100,
            total_tokens=150,
            cached_tokens=10,
            reasoning_tokens=20,
            cost=0.00123,
        ),
    )
    clock.now = 4.0

    outputs = renderer.feed(ENDINGS["completed"])

    final = (
        "4.00 s · 50.0 tokens/s · $0.00123 · 150 tokens (50 in, 10 cached, 100 out, 20 reasoning)"
    )
    assert outputs == [
        status(final, done=True),
        Output.to_emit({"type": "chat:completion", "data": {"usage": OPENAI_USAGE}}),
        chunk(usage=OPENAI_USAGE),
    ]
    assert renderer.answer_text == "42"
    assert not renderer.failed


def test_no_chat_completion_event_says_done(clock: FakeClock) -> None:
    # Open WebUI's own final chat:completion carries done; a pipe-sent one would
    # run the browser's completion work twice (see the module docstring).
    for name, ending in ENDINGS.items():
        renderer = renderer_for(clock)
        outputs = feed(renderer, usage(input_tokens=1, output_tokens=1, total_tokens=2), ending)
        completion = events_of(outputs, "chat:completion")
        assert all("done" not in data for data in completion), name


def test_usage_is_summed_over_rounds(clock: FakeClock) -> None:
    renderer = renderer_for(clock)

    feed(
        renderer,
        usage(input_tokens=10, output_tokens=5, total_tokens=15, cached_tokens=2, cost=None),
        usage(input_tokens=30, output_tokens=7, total_tokens=0, reasoning_tokens=3, cost=0.25),
    )

    assert renderer.usage == UsageTotals(
        input_tokens=40,
        output_tokens=12,
        total_tokens=52,  # the second round's missing total is input + output
        cached_tokens=2,
        reasoning_tokens=3,
        cost=0.25,
    )
    outputs = renderer.feed(ENDINGS["completed"])
    assert chunks_of(outputs)[-1]["usage"]["prompt_tokens"] == 40
    assert renderer_for(clock).usage is None


CLOSING_LINE = {
    "completed": "3.00 s",  # the final line (no usage in these tests)
    "incomplete": "3.00 s",
    "failed": "Failed after 3.00 s",
    "cancelled": "Stopped after 3.00 s",
}


@pytest.mark.parametrize("name", list(ENDINGS))
def test_every_ending_leaves_the_status_line_closed(clock: FakeClock, name: str) -> None:
    """Only the last entry can shimmer: every ending leaves it done, with a line of its own."""
    renderer = renderer_for(clock)
    before = feed(
        renderer,
        Status(request_id=RID, description="Reading", done=False),
        Status(request_id=RID, description="Reading", done=True),
        Status(request_id=RID, description="Searching the web…", done=False),
        ReasoningDelta(request_id=RID, text="thinking"),
    )
    assert renderer.open_status == "Searching the web…"
    clock.now = 3.0

    after = renderer.feed(ENDINGS[name])

    assert renderer.open_status is None
    statuses = events_of(before + after, "status")
    assert_clean_history(statuses)
    assert statuses[-1] == {"description": CLOSING_LINE[name], "done": True}
    assert statuses[1] == {"description": "Reading: done", "done": True}


def test_failed_ending_marks_the_message_as_an_error(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    feed(renderer, TextDelta(request_id=RID, text="partial"))

    outputs = renderer.feed(ENDINGS["failed"])

    message = "The model provider is down; retry."
    assert outputs == [
        Output.to_yield({"error": {"message": message}}),
        Output.to_emit({"type": "chat:completion", "data": {"error": {"message": message}}}),
    ]
    assert renderer.failed
    assert renderer.answer_text == "partial"


def test_failed_ending_still_reports_usage_first(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    feed(renderer, usage(input_tokens=3, output_tokens=0, total_tokens=3))

    outputs = renderer.feed(ENDINGS["failed"])

    assert [o.kind for o in outputs] == ["chunk", "chunk", "event"]
    first, second = chunks_of(outputs)
    assert first["usage"]["prompt_tokens"] == 3
    assert first["choices"] == []
    assert "choices" not in second
    assert second["error"]["message"].startswith("The model provider is down")
    assert events_of(outputs, "chat:completion")[0]["usage"]["total_tokens"] == 3


def test_incomplete_ending_keeps_the_answer_and_says_why(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    feed(renderer, TextDelta(request_id=RID, text="The first half"))

    outputs = renderer.feed(ENDINGS["incomplete"])

    notice = "\n\n> ⚠️ The answer was cut short."
    assert outputs[:2] == [
        Output.to_emit(
            {
                "type": "notification",
                "data": {"type": "warning", "content": "The answer was cut short."},
            }
        ),
        chunk(delta={"content": notice}),
    ]
    assert events_of(outputs, "status")[0]["description"] == "0.00 s"  # no usage came
    assert renderer.answer_text == "The first half"
    assert renderer.content_text == "The first half" + notice
    assert not renderer.failed


def test_incomplete_notice_closes_an_open_code_fence(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    feed(renderer, TextDelta(request_id=RID, text="Code:\n```python\nx = 1"))

    outputs = renderer.feed(ENDINGS["incomplete"])

    assert chunks_of(outputs)[0]["choices"][0]["delta"]["content"] == (
        "\n```\n\n> ⚠️ The answer was cut short."
    )


def test_incomplete_notice_without_any_answer_has_no_leading_blank_lines(
    clock: FakeClock,
) -> None:
    renderer = renderer_for(clock)
    outputs = renderer.feed(ENDINGS["incomplete"])
    assert chunks_of(outputs)[0]["choices"][0]["delta"]["content"] == (
        "> ⚠️ The answer was cut short."
    )


def test_a_cancelled_answer_only_closes_an_open_status(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    feed(renderer, usage(input_tokens=1, output_tokens=1, total_tokens=2))
    feed(renderer, ReasoningDelta(request_id=RID, text="x"))
    assert renderer.feed(ENDINGS["cancelled"]) == []  # nothing was open

    renderer = renderer_for(clock)
    feed(renderer, Status(request_id=RID, description="Calling f…", done=False))
    clock.now = 1.5
    assert renderer.feed(ENDINGS["cancelled"]) == [status("Stopped after 1.50 s", done=True)]


def test_nothing_is_rendered_after_the_ending(clock: FakeClock) -> None:
    renderer = renderer_for(clock)
    renderer.feed(ENDINGS["completed"])

    assert (
        feed(
            renderer,
            TextDelta(request_id=RID, text="late"),
            Status(request_id=RID, description="late", done=False),
            ENDINGS["failed"],
        )
        == []
    )
    assert renderer.answer_text == ""
    assert not renderer.failed


def test_without_the_final_line_a_reasoning_answer_adds_no_status(clock: FakeClock) -> None:
    """ "Thought for N seconds" is the heading of Open WebUI's thinking block already."""
    renderer = renderer_for(clock, show_final_status=False)
    clock.now = 1.0
    feed(renderer, ReasoningDelta(request_id=RID, text="hmm"))
    clock.now = 2.25
    feed(renderer, TextDelta(request_id=RID, text="ok"))
    clock.now = 9.0

    assert events_of(renderer.feed(ENDINGS["completed"]), "status") == []


def test_without_the_final_line_no_line_is_added(clock: FakeClock) -> None:
    renderer = renderer_for(clock, show_final_status=False)
    feed(renderer, TextDelta(request_id=RID, text="ok"))

    assert events_of(renderer.feed(ENDINGS["completed"]), "status") == []


@pytest.mark.parametrize("name", ["completed", "incomplete"])
def test_without_the_final_line_an_open_status_gets_its_closing_line(
    clock: FakeClock, name: str
) -> None:
    renderer = renderer_for(clock, show_final_status=False)
    feed(renderer, Status(request_id=RID, description="Searching the web…", done=False))

    outputs = renderer.feed(ENDINGS[name])

    assert events_of(outputs, "status") == [{"description": "Searched the web", "done": True}]


def test_without_the_final_line_an_empty_answer_still_ends_the_wait(clock: FakeClock) -> None:
    renderer = renderer_for(clock, show_final_status=False)
    renderer.opening()
    clock.now = 0.75

    outputs = renderer.feed(ENDINGS["completed"])

    assert events_of(outputs, "status") == [
        {"description": "OpenRouter responded in 0.75 s", "done": True}
    ]


# -- helpers for the pipe -------------------------------------------------------------------


def test_error_chunks() -> None:
    assert error_chunk("Nope.") == {"error": {"message": "Nope."}}
    assert busy_error_chunk("Busy; retry in 2 s.") == {
        "error": {"message": "Busy; retry in 2 s.", "type": "server_busy", "code": 503}
    }


def test_an_output_is_either_a_chunk_or_an_event() -> None:
    as_chunk = Output.to_yield({"choices": []})
    as_event = Output.to_emit({"type": "status", "data": {}})

    assert as_chunk.chunk == {"choices": []}
    assert as_event.chunk is None
    assert as_event.event == {"type": "status", "data": {}}
    with pytest.raises(TypeError):
        _ = as_chunk.event


# -- SafeEmitter -------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def test_emitter_errors_are_swallowed_and_logged_once(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def broken(event: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("socket gone")

    emitter = SafeEmitter(broken)

    async def scenario() -> None:
        await emitter.emit({"type": "notification", "data": {}})
        await emitter.status("Working", done=False)
        await emitter.close_statuses()

    with caplog.at_level(logging.WARNING, logger="orpipe.owui"):
        run_on(loop_kind, scenario)

    assert calls == 3  # later events are still tried
    assert emitter.failures == 3
    records = [r for r in caplog.records if r.name == "orpipe.owui"]
    assert len(records) == 1
    assert "ConnectionError: socket gone" in records[0].getMessage()
    assert emitter.open_status is None


def test_a_cancellation_from_the_emitter_propagates(loop_kind: str) -> None:
    async def cancelled(event: dict[str, Any]) -> None:
        raise asyncio.CancelledError

    emitter = SafeEmitter(cancelled)

    async def scenario() -> None:
        with pytest.raises(asyncio.CancelledError):
            await emitter.emit({"type": "status", "data": {"description": "x", "done": True}})

    run_on(loop_kind, scenario)
    assert emitter.failures == 0


def test_a_task_cancelled_inside_emit_is_cancelled(loop_kind: str) -> None:
    async def scenario() -> None:
        entered = asyncio.Event()

        async def hanging(event: dict[str, Any]) -> None:
            entered.set()
            await asyncio.sleep(3600)

        emitter = SafeEmitter(hanging)
        task = asyncio.create_task(emitter.status("Searching", done=False))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        assert emitter.failures == 0

    run_on(loop_kind, scenario)


def test_no_emitter_is_a_quiet_no_op(loop_kind: str) -> None:
    emitter = SafeEmitter(None)

    async def scenario() -> None:
        await emitter.emit({"type": "notification", "data": {"type": "info", "content": "x"}})
        await emitter.status("Working", done=False)
        await emitter.close_statuses()

    run_on(loop_kind, scenario)
    assert not emitter.enabled
    assert emitter.failures == 0
    assert emitter.open_status is None


def test_close_statuses_ends_a_shimmering_status_line_once(loop_kind: str) -> None:
    """Only the last entry's ``done`` matters to the browser: earlier open ones need
    nothing, and the line is ended by a line of its own, not a repeat."""
    recorder = Recorder()
    emitter = SafeEmitter(recorder)

    async def scenario() -> None:
        await emitter.status("A…", done=False, action="web_search")
        await emitter.status("B…", done=False)
        assert emitter.open_status == "B…"
        recorder.events.clear()

        await emitter.close_statuses()
        await emitter.close_statuses()  # nothing left the second time
        assert emitter.open_status is None
        await emitter.status("C", done=True)
        await emitter.emit({"type": "status", "data": {"description": "D"}})  # no done: not open
        await emitter.close_statuses()

    run_on(loop_kind, scenario)
    assert [e["data"] for e in recorder.events] == [
        {"description": STOPPED, "done": True},
        {"description": "C", "done": True},
        {"description": "D"},
    ]


def test_the_emitter_sends_no_blank_hidden_or_repeated_status(loop_kind: str) -> None:
    """Whoever builds a status, Open WebUI's list gets no blank dot and no line twice."""
    recorder = Recorder()
    emitter = SafeEmitter(recorder)

    async def scenario() -> None:
        await emitter.status("Preparing attachments…", done=False)
        await emitter.status("Preparing attachments…", done=True, hidden=True)  # dropped
        await emitter.status("Preparing attachments…", done=True)
        await emitter.status("", done=True)
        await emitter.emit({"type": "status", "data": {"done": True}})
        await emitter.emit({"type": "status", "data": "not a mapping"})
        await emitter.status("DB ops skipped due to repeated errors", done=True)
        await emitter.status("DB ops skipped due to repeated errors", done=True)

    run_on(loop_kind, scenario)
    statuses = [e["data"] for e in recorder.events]
    assert statuses == [
        {"description": "Preparing attachments…", "done": False},
        {"description": "Attachments prepared", "done": True},
        {"description": "DB ops skipped due to repeated errors", "done": True},
        {"description": "DB ops skipped due to repeated errors (2)", "done": True},
    ]
    assert_clean_history(statuses)


def test_statuses_from_the_renderer_are_closed_when_the_stream_stops_early(
    loop_kind: str, clock: FakeClock
) -> None:
    recorder = Recorder()
    emitter = SafeEmitter(recorder)
    renderer = renderer_for(clock)

    async def scenario() -> None:
        # The pipe's loop, interrupted before any ending (e.g. the bridge broke).
        for out in renderer.opening():
            await emitter.emit(out.event)
        for event in (
            Status(request_id=RID, description="Searching the web…", done=False),
            ReasoningDelta(request_id=RID, text="hmm"),
        ):
            for out in renderer.feed(event):
                if out.chunk is None:
                    await emitter.emit(out.event)
        await emitter.close_statuses()

    run_on(loop_kind, scenario)
    statuses = [e["data"] for e in recorder.events]
    assert statuses == [
        {"description": WAITING, "done": False},
        {"description": "Searching the web…", "done": False},
        {"description": STOPPED, "done": True},
    ]
    assert emitter.open_status is None


def test_a_hung_emitter_is_given_up_and_the_answer_goes_on(
    loop_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orpipe.adapters.openwebui import safe_emitter as owui_events  # noqa: PLC0415

    monkeypatch.setattr(owui_events, "EMIT_TIMEOUT_S", 0.05)
    delivered: list[dict[str, Any]] = []

    async def stuck_once(event: dict[str, Any]) -> None:
        if not delivered:
            delivered.append({})
            await asyncio.Event().wait()  # a socket that never answers
        delivered.append(event)

    emitter = SafeEmitter(stuck_once)

    async def scenario() -> None:
        await emitter.emit({"type": "notification", "data": {"n": 1}})
        await emitter.emit({"type": "notification", "data": {"n": 2}})

    run_on(loop_kind, scenario)
    assert emitter.failures == 1
    assert delivered[1:] == [{"type": "notification", "data": {"n": 2}}]


def test_stored_artifacts_are_referenced_invisibly_at_the_end(clock: FakeClock) -> None:
    from orpipe.engine.artifacts import find_markers  # noqa: PLC0415

    renderer = renderer_for(clock)
    outputs = feed(
        renderer,
        OutputItem(request_id="r", item={"type": "reasoning"}, artifact_id="01M8HEYFBJ3BGE43XBA2"),
        OutputItem(request_id="r", item={"type": "reasoning"}),  # not stored: no reference
        TextDelta(request_id="r", text="```py\nprint(1)"),
        Completed(request_id="r", response_id=None, text_chars=14),
    )
    shown = "".join(c["choices"][0]["delta"]["content"] for c in chunks_of(outputs) if c["choices"])
    assert find_markers(shown) == ["01M8HEYFBJ3BGE43XBA2"]
    assert shown.endswith("```\n\n[01M8HEYFBJ3BGE43XBA2]: #\n"), "a code block is closed first"
    assert renderer.content_text == shown
    assert renderer.artifact_ids == ("01M8HEYFBJ3BGE43XBA2",)


def test_pass_through_calls_carry_open_webuis_own_names() -> None:
    renderer = AnswerRenderer(
        tool_calls_to_owui=True, tool_names={"weather_lookup_v2": "weather lookup/v2"}
    )
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "weather_lookup_v2",
        "arguments": '{"city": "Oslo"}',
    }
    other = {**call, "call_id": "call_2", "name": "get_time", "arguments": "{}"}
    outputs = [
        *renderer.feed(OutputItem(request_id="r", item=call)),
        *renderer.feed(OutputItem(request_id="r", item=other)),
    ]
    calls = [o.chunk["choices"][0]["delta"]["tool_calls"][0] for o in outputs]
    assert calls == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather lookup/v2", "arguments": '{"city": "Oslo"}'},
        },
        {
            "index": 1,
            "id": "call_2",
            "type": "function",
            "function": {"name": "get_time", "arguments": "{}"},
        },
    ]


def test_engine_mode_never_hands_calls_to_open_webui() -> None:
    renderer = AnswerRenderer()
    item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    assert renderer.feed(OutputItem(request_id="r", item=item)) == []


# -- pass-through: function calls handed to Open WebUI as delta.tool_calls -------------------


def passthrough_renderer(clock: FakeClock, **kwargs: Any) -> AnswerRenderer:
    return AnswerRenderer(
        model="orpipe.test-model",
        tool_calls_to_owui=True,
        clock=clock,
        wall_clock=lambda: WALL,
        **kwargs,
    )


def function_call(call_id: str, name: str = "get_weather", **extra: Any) -> OutputItem:
    item = {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": '{"city": "Oslo"}',
        "status": "completed",
        **extra,
    }
    return OutputItem(request_id=RID, item=item)


def tool_call_entries(outputs: list[Output]) -> list[dict[str, Any]]:
    return [
        entry
        for c in chunks_of(outputs)
        for choice in c["choices"]
        for entry in choice["delta"].get("tool_calls", [])
    ]


def test_a_function_call_is_one_complete_tool_calls_chunk(clock: FakeClock) -> None:
    outputs = passthrough_renderer(clock).feed(function_call("call_abc"))
    # The whole chunk, as Open WebUI's middleware and API clients receive it.
    assert outputs == [
        Output.to_yield(
            {
                "id": CHUNK_ID,
                "object": "chat.completion.chunk",
                "created": int(WALL),
                "model": "orpipe.test-model",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_abc",
                                    "type": "function",
                                    "function": {
                                        "name": "get_weather",
                                        "arguments": '{"city": "Oslo"}',
                                    },
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
            }
        )
    ]


def test_several_calls_get_indices_in_the_models_order(clock: FakeClock) -> None:
    renderer = passthrough_renderer(clock)
    outputs = feed(
        renderer,
        TextDelta(request_id=RID, text="Let me check."),
        function_call("call_1"),
        OutputItem(request_id=RID, item={"type": "reasoning", "id": "rs_1", "summary": []}),
        function_call("call_2", name="get_time"),
        function_call("call_3"),
        Completed(request_id=RID, response_id="resp_1", text_chars=13),
    )
    entries = tool_call_entries(outputs)
    assert [(e["index"], e["id"], e["function"]["name"]) for e in entries] == [
        (0, "call_1", "get_weather"),
        (1, "call_2", "get_time"),
        (2, "call_3", "get_weather"),
    ]
    # One call per chunk, and the text is still the answer's.
    assert all(len(c["choices"][0]["delta"].get("tool_calls", [])) <= 1 for c in chunks_of(outputs))
    assert renderer.answer_text == "Let me check."
    assert outputs[-1].kind == "event"  # the usual ending follows the calls


def test_each_renderer_counts_its_own_indices(clock: FakeClock) -> None:
    # Open WebUI reads each pipe call's stream with a fresh list of calls.
    first = passthrough_renderer(clock).feed(function_call("call_1"))
    second = passthrough_renderer(clock).feed(function_call("call_2"))
    assert [e["index"] for e in tool_call_entries([*first, *second])] == [0, 0]


def test_tool_calls_chunks_survive_the_json_round_trip_open_webui_makes(clock: FakeClock) -> None:
    import json  # noqa: PLC0415

    arguments = MappingProxyType({"city": "Zürich", "days": (1, 2)})
    outputs = feed(
        passthrough_renderer(clock),
        function_call("call_1", arguments=arguments),
        function_call("call_2"),
    )
    for c in chunks_of(outputs):
        assert json.loads(json.dumps(c)) == c
    entries = tool_call_entries(outputs)
    assert json.loads(entries[0]["function"]["arguments"]) == {"city": "Zürich", "days": [1, 2]}
    # What the middleware needs of each entry: a distinct int index, an id, string fields.
    assert len({e["index"] for e in entries}) == len(entries)
    assert all(isinstance(e["function"]["arguments"], str) and e["id"] for e in entries)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        # No call id: the item id still identifies the call.
        (
            {"type": "function_call", "id": "fc_9", "name": "f", "arguments": "{}"},
            {"id": "fc_9", "name": "f", "arguments": "{}"},
        ),
        # Neither id: unique within the answer by its index.
        (
            {"type": "function_call", "name": "f", "arguments": "{}"},
            {"id": "call_0", "name": "f", "arguments": "{}"},
        ),
        # Not JSON: passed on as the model wrote it; Open WebUI reports the parse error.
        (
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": '{"a": 1'},
            {"id": "c", "name": "f", "arguments": '{"a": 1'},
        ),
        # No arguments at all: an empty object.
        (
            {"type": "function_call", "call_id": "c", "name": "f"},
            {"id": "c", "name": "f", "arguments": "{}"},
        ),
        # No name: Open WebUI answers "Tool not found" to the model, nothing crashes.
        (
            {"type": "function_call", "call_id": "c", "arguments": "{}"},
            {"id": "c", "name": "", "arguments": "{}"},
        ),
    ],
)
def test_incomplete_function_call_items_still_give_a_usable_call(
    clock: FakeClock, item: dict[str, Any], expected: dict[str, str]
) -> None:
    (entry,) = tool_call_entries(
        passthrough_renderer(clock).feed(OutputItem(request_id=RID, item=item))
    )
    assert entry == {
        "index": 0,
        "id": expected["id"],
        "type": "function",
        "function": {"name": expected["name"], "arguments": expected["arguments"]},
    }


@pytest.mark.parametrize("to_owui", [False, True])
def test_stored_items_are_referenced_in_either_mode(clock: FakeClock, to_owui: bool) -> None:
    renderer = AnswerRenderer(tool_calls_to_owui=to_owui, clock=clock, wall_clock=lambda: WALL)
    outputs = feed(
        renderer,
        OutputItem(request_id=RID, item={"type": "reasoning"}, artifact_id="01M8HEYFBJ3BGE43XBA2"),
        function_call("call_1"),
        Completed(request_id=RID, response_id=None, text_chars=0),
    )
    assert len(tool_call_entries(outputs)) == (1 if to_owui else 0)
    shown = "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks_of(outputs) if c["choices"]
    )
    assert shown == "\n\n[01M8HEYFBJ3BGE43XBA2]: #\n"
    assert renderer.artifact_ids == ("01M8HEYFBJ3BGE43XBA2",)


def test_engine_mode_renders_nothing_for_calls_and_keeps_the_answer(clock: FakeClock) -> None:
    engine = renderer_for(clock)
    outputs = feed(
        engine,
        function_call("call_1"),
        TextDelta(request_id=RID, text="It is 4 °C."),
        function_call("call_2"),
    )
    assert tool_call_entries(outputs) == []
    assert outputs == [chunk(delta={"content": "It is 4 °C."})]


def test_no_call_is_handed_over_after_the_answer_ended(clock: FakeClock) -> None:
    renderer = passthrough_renderer(clock)
    renderer.feed(Cancelled(request_id=RID, reason="stopped"))
    assert renderer.feed(function_call("call_1")) == []
