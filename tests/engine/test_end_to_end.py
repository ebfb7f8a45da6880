"""The whole engine against the mock OpenRouter over real loopback HTTP.

Each fault scenario must give its own clear ending, within its timeout, while
other requests on the same engine finish normally.
"""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel

from orpipe.bench.mock_scenarios import plan
from orpipe.engine import (
    Citation,
    Completed,
    Failed,
    Incomplete,
    Notice,
    OutputItem,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamResponseFailed,
    UpstreamTimeout,
    Usage,
)
from tests.engine.support import API_KEY, collect, metadata, mock_server, request, running_engine


async def test_plain_text_equals_what_the_mock_sent() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request("text", tokens=120, seed=3)
        got = await collect(engine.submit(req))
    assert isinstance(got.ending, Completed)
    assert got.text == plan("text", metadata(req)).text
    assert got.ending.text_chars == len(got.text)
    [usage] = got.of_type(Usage)
    assert usage.cost is not None and usage.cost > 0
    assert usage.output_tokens > 0


async def test_split_surrogate_pairs_are_rejoined() -> None:
    async with mock_server() as server, running_engine(server, update_char_limit=1) as engine:
        req = request("text", tokens=80, seed=5, split_surrogates=1)
        got = await collect(engine.submit(req))
    expected = plan("text", metadata(req)).text
    assert any(ord(c) > 0xFFFF for c in expected), "the plan must contain astral characters"
    assert got.text == expected
    assert not any("\ud800" <= c <= "\udfff" for c in got.text)


async def test_one_event_per_write_and_many_per_write_give_the_same_text() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        one = request("text", tokens=60, seed=9, events_per_write=1)
        many = request("text", tokens=60, seed=9, events_per_write=25)
        got_one, got_many = await collect(engine.submit(one)), await collect(engine.submit(many))
    assert got_one.text == got_many.text == plan("text", metadata(one)).text


@pytest.mark.parametrize("style", ["summary", "text"])
async def test_reasoning_streams_and_its_item_is_reported(style: str) -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request("reasoning", tokens=30, reasoning_tokens=25, reasoning_style=style)
        got = await collect(engine.submit(req))
    expected = plan("reasoning", metadata(req))
    assert isinstance(got.ending, Completed)
    assert got.text == expected.text
    assert got.reasoning.replace("\n\n", "") == expected.reasoning_text.replace("\n\n", "")
    items = [e.item for e in got.of_type(OutputItem)]  # type: ignore[attr-defined]
    assert [i["type"] for i in items] == ["reasoning"]
    [usage] = got.of_type(Usage)
    assert usage.reasoning_tokens > 0


async def test_annotations_become_deduplicated_citations() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request("annotations", tokens=20, citations=4)
        got = await collect(engine.submit(req))
    expected_urls = list(
        dict.fromkeys(url for url, _ in plan("annotations", metadata(req)).citations)
    )
    urls = [c.url for c in got.of_type(Citation)]  # type: ignore[attr-defined]
    assert urls == expected_urls
    assert len(urls) < 4, "the mock repeats one URL; it must be reported once"


async def test_function_calls_are_reported_as_output_items() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request("tools", calls=3)
        got = await collect(engine.submit(req))
    calls = [e.item for e in got.of_type(OutputItem)]  # type: ignore[attr-defined]
    expected = plan("tools", metadata(req)).function_calls
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == list(expected)
    assert isinstance(got.ending, Completed)


async def test_429_is_retried_before_output_and_then_succeeds() -> None:
    async with (
        mock_server() as server,
        running_engine(server, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.02) as engine,
    ):
        req = request("http-429", tokens=15, fail_times=2, attempt_key="a1", retry_after=0)
        got = await collect(engine.submit(req))
        retries = engine.statistics().actors["fetcher"]["retries"]
    assert isinstance(got.ending, Completed)
    assert got.text == plan("text", metadata(req)).text
    assert retries == 2


async def test_429_with_a_long_retry_after_fails_at_once_with_advice() -> None:
    async with mock_server() as server, running_engine(server, retry_after_cap_s=5) as engine:
        with trio.fail_after(5):
            got = await collect(engine.submit(request("http-429", retry_after=12)))
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamRateLimited)
    assert "rate-limited this request; retry in 12 s" in got.ending.message


@pytest.mark.parametrize(
    ("scenario", "status", "phrase"),
    [
        ("http-401", 401, "rejected the API key"),
        ("http-402", 402, "out of credits"),
        ("http-400", 400, "rejected the request as invalid"),
        ("http-502", 502, "provider is down"),
        ("http-529", 529, "overloaded"),
    ],
)
async def test_http_errors_end_with_a_readable_message(
    scenario: str, status: int, phrase: str
) -> None:
    async with (
        mock_server() as server,
        running_engine(server, retry_backoff_initial_s=0.01, retry_backoff_max_s=0.02) as engine,
    ):
        got = await collect(engine.submit(request(scenario)))
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamHTTPError)
    assert got.ending.error.status == status
    assert phrase in got.ending.message
    assert "Traceback" not in got.ending.message


async def test_dropped_connection_is_not_retried_and_says_where_it_stopped() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request("drop", tokens=40, drop_after=10)
        got = await collect(engine.submit(req))
        requests_seen = server.stats.requests_total
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamProtocolError)
    assert got.text == plan("drop", metadata(req)).text  # nothing re-sent, nothing lost
    assert f"after {len(got.text):,} characters" in got.ending.message
    assert requests_seen == 1, "text had started: the request must not be re-sent"


@pytest.mark.parametrize("scenario", ["malformed", "invalid-utf8"])
async def test_a_bad_event_is_skipped_with_a_notice(scenario: str) -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request(scenario, tokens=30, bad_at=5)
        got = await collect(engine.submit(req))
        failures = engine.statistics().actors["parser"]["parse_failed"]
    assert isinstance(got.ending, Completed)
    assert got.text == plan(scenario, metadata(req)).text
    assert len(got.of_type(Notice)) == 1
    assert failures == 1


async def test_an_oversized_event_stops_the_stream() -> None:
    async with mock_server() as server, running_engine(server, max_event_bytes=64 * 1024) as engine:
        req = request("oversized", tokens=30, bad_at=5, oversize_bytes=256 * 1024)
        got = await collect(engine.submit(req))
    assert isinstance(got.ending, Failed)
    assert "larger than 65,536 bytes" in got.ending.message


async def test_a_stall_ends_after_the_idle_read_timeout() -> None:
    async with mock_server() as server, running_engine(server, read_idle_timeout_s=0.3) as engine:
        with trio.fail_after(10):
            got = await collect(engine.submit(request("stall", tokens=20, stall_after=5)))
        await trio.lowlevel.checkpoint()  # let the server notice the disconnect
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamTimeout)
    assert "sent nothing for 0.3 s" in got.ending.message


@pytest.mark.parametrize(
    ("scenario", "params", "code"),
    [
        ("failed", {}, "server_error"),
        ("error-event", {"code_style": "int", "error_shape": "top"}, 502),
        ("error-event", {"code_style": "string", "error_shape": "nested"}, "server_error"),
        ("response-error", {}, "server_error"),
    ],
)
async def test_in_band_failures_end_the_request(
    scenario: str, params: dict[str, str], code: int | str
) -> None:
    async with mock_server() as server, running_engine(server) as engine:
        req = request(scenario, tokens=30, error_after=7, **params)
        got = await collect(engine.submit(req))
    assert isinstance(got.ending, Failed)
    assert isinstance(got.ending.error, UpstreamResponseFailed)
    assert got.ending.error.code == code
    assert got.text == plan(scenario, metadata(req)).text
    assert "partial" in got.ending.message


async def test_incomplete_response_is_an_explicit_ending() -> None:
    async with mock_server() as server, running_engine(server) as engine:
        got = await collect(engine.submit(request("incomplete", tokens=10)))
    assert isinstance(got.ending, Incomplete)
    assert got.ending.reason == "max_output_tokens"
    assert "output token limit" in got.ending.message


@pytest.mark.parametrize("done", [0, 1])
async def test_a_stream_without_terminal_event_fails_clearly(done: int) -> None:
    async with mock_server() as server, running_engine(server) as engine:
        got = await collect(engine.submit(request("no-terminal", tokens=10, done=done)))
    assert isinstance(got.ending, Failed)
    assert "without finishing the response" in got.ending.message


async def test_faults_do_not_harm_other_requests_on_the_same_engine() -> None:
    faults = [
        request("drop", tokens=40, drop_after=5),
        request("malformed", tokens=40),
        request("stall", tokens=40, stall_after=3),
        request("failed", tokens=40),
        request("http-500"),
        request("oversized", tokens=40, oversize_bytes=200_000),
        request("no-terminal", tokens=40),
    ]
    healthy = [request("text", tokens=50, seed=i, tps=400) for i in range(20)]
    results: dict[str, object] = {}
    async with (
        mock_server() as server,
        running_engine(
            server,
            read_idle_timeout_s=0.5,
            max_event_bytes=64 * 1024,
            retry_backoff_initial_s=0.01,
            retry_backoff_max_s=0.02,
        ) as engine,
    ):

        async def run(req: object) -> None:
            results[req.request_id] = await collect(engine.submit(req))  # type: ignore[attr-defined]

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for req in faults + healthy:
                    nursery.start_soon(run, req)
        stats = engine.statistics()
    for req in healthy:
        got = results[req.request_id]
        assert isinstance(got.ending, Completed)  # type: ignore[attr-defined]
        assert got.text == plan("text", metadata(req)).text  # type: ignore[attr-defined]
    endings = [type(results[r.request_id].ending) for r in faults]  # type: ignore[attr-defined]
    assert endings.count(Failed) == 6 and endings.count(Completed) == 1  # malformed completes
    assert stats.flow.open_requests == 0
    assert stats.admission.in_flight == 0


async def test_the_api_key_appears_in_no_event_error_or_statistic() -> None:
    scenarios = ["text", "http-401", "http-429", "drop", "failed", "stall", "malformed"]
    seen: list[str] = []
    async with (
        mock_server() as server,
        running_engine(server, read_idle_timeout_s=0.3, retry_attempts=0) as engine,
    ):
        for scenario in scenarios:
            got = await collect(engine.submit(request(scenario, tokens=10, stall_after=2)))
            seen.extend(repr(event) for event in got.events)
            if isinstance(got.ending, Failed):
                error = got.ending.error
                seen.extend(
                    [str(error), repr(error), repr(error.__cause__), repr(error.__context__)]
                )
        seen.append(repr(engine.statistics().as_dict()))
        seen.append(repr(engine.ports))
    assert len(seen) > 20
    for text in seen:
        assert API_KEY not in text
        assert API_KEY[-12:] not in text


@pytest.mark.parametrize(
    "scenario",
    ["text", "reasoning", "annotations", "tools", "malformed", "drop", "incomplete"],
)
async def test_the_express_lane_and_the_shared_stages_give_the_same_answer(scenario: str) -> None:
    """The fetcher's express lane (parsing inline, straight to the batcher) and the
    shared parser pool and reorderer are two routes to the same events, in order."""
    answers: dict[bool, list[object]] = {}
    for express in (True, False):
        async with (
            mock_server() as server,
            running_engine(
                server, express_lane=express, parser_workers=3, request_window_events=7
            ) as engine,
        ):
            req = request(scenario, tokens=40, events_per_write=3, drop_after=15)
            got = await collect(engine.submit(req))
            ending = got.ending
            assert ending is not None
            answers[express] = [
                got.text,
                got.reasoning,
                [type(e).__name__ for e in got.events],
                type(ending).__name__,
            ]
            parser = engine.statistics().actors["parser"]
            assert (parser.get("express_events", 0) > 0) is express
    assert answers[True] == answers[False]
