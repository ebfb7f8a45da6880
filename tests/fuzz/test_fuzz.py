"""The hostile-upstream fuzz harness, short version (the long one: ``python -m bench fuzz``).

``test_short_fuzz_run`` plays a fixed-seed run of generated streams against
real engines over loopback and asserts the properties for real: no engine
crash, no ending later than the configured timeouts allow, exactly one
ending per stream, the exact text of every well-formed stream, and a canary
on each engine that still completes after every batch. A failure prints
each broken property with its class, seed and a replay command.

The other tests check the harness itself: every generated case reads, by
the book (h11 + the WHATWG SSE algorithm + the Responses contract), as what
its expectation demands of the engine, and a case is a pure function of
its class and seed.
"""

from __future__ import annotations

import pytest
import trio

from tests.fuzz.generator import CLASS_NAMES, generate
from tests.fuzz.reference import reference_answer
from tests.fuzz.runner import FuzzOptions, run_fuzz
from tests.fuzz.script import Case, Limits

#: The CI run: fixed seed, ~200 streams, 20 at a time.
SEED = 20260707
STREAMS = 200
CONCURRENCY = 20
#: Batches stop starting after this long, so a badly broken engine fails the
#: test with its report instead of hitting pytest's timeout.
BUDGET_S = 40.0

LIMITS = (
    Limits(read_idle_timeout_s=2.0, max_event_bytes=256 * 1024, request_window_events=16),
    Limits(read_idle_timeout_s=2.0, max_event_bytes=64 * 1024, request_window_events=1),
)


@pytest.mark.timeout(90)
def test_short_fuzz_run() -> None:
    options = FuzzOptions(
        seed=SEED, streams=STREAMS, concurrency=CONCURRENCY, seconds=BUDGET_S, isolate_crashes=2
    )
    # Its own trio.run (not pytest-trio's), so a failure is one plain assertion message.
    summary = trio.run(run_fuzz, options)
    assert summary.ok, (
        f"the engine broke properties against hostile streams (seed {SEED}):\n"
        + summary.table()
        + "\n\n"
        + summary.report()
    )


@pytest.mark.parametrize("cls", CLASS_NAMES)
def test_every_case_reads_by_the_book_as_its_expectation_says(cls: str) -> None:
    for limits in LIMITS:
        for seed in range(12):
            case = generate(cls, seed, limits)
            _check_by_the_book(case)


def _check_by_the_book(case: Case) -> None:
    expect = case.expect
    final = reference_answer(case.attempts[-1])
    where = f"{case.cls}:{case.seed}: {case.describe()}"
    if expect.ending in ("completed", "incomplete"):
        assert final.status == 200, where
        assert final.terminal == f"response.{expect.ending}", where
        assert final.text == expect.text, where
        assert final.reasoning == expect.reasoning, where
        assert final.usage == expect.usage, where
        assert final.response_id == expect.response_id, where
        assert expect.citations is not None
        assert set(final.urls) == expect.citations, where
        if not expect.notices_allowed:
            assert final.unreadable == 0, where
        return
    if expect.message_contains is not None:
        if final.status == 200 and final.terminal is not None:
            assert final.message == expect.message_contains, where
        else:
            assert expect.message_contains.encode() in _unescaped(final.body), where
    if case.cls == "oversized":
        # A by-the-book reader has no size limit: it reads on past the big event.
        assert expect.text is not None and final.text.startswith(expect.text), where
    elif expect.text is not None and final.status == 200:
        assert final.text == expect.text, where
    if expect.text_prefix_of is not None and final.status == 200:
        assert expect.text_prefix_of.startswith(final.text.removesuffix("\ufffd")), where
    if case.cls in ("truncated", "no_terminal", "non_sse_200", "html_error", "http_error"):
        assert final.terminal is None or final.terminal != "response.completed", where


def _unescaped(body: bytes) -> bytes:
    import json  # noqa: PLC0415

    try:
        return json.dumps(json.loads(body), ensure_ascii=False).encode()
    except ValueError:
        return body


@pytest.mark.parametrize("cls", [*CLASS_NAMES, "canary"])
def test_a_case_is_a_pure_function_of_class_and_seed(cls: str) -> None:
    assert generate(cls, 7, LIMITS[0]) == generate(cls, 7, LIMITS[0])
    assert generate(cls, 7, LIMITS[0]) != generate(cls, 8, LIMITS[0])


def test_the_bench_command_replays_one_case(capsys: pytest.CaptureFixture[str]) -> None:
    from orpipe.bench.fuzz import EXIT_OK, main  # noqa: PLC0415

    assert main(["--case", "http_error:3@5"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "streams played: 1" in out
    assert "case http_error:3@5" in out


@pytest.mark.parametrize(
    "argv",
    [["--case", "http_error"], ["--only", "no_such_class"], ["--prompt", "3", "--read-idle", "2"]],
)
def test_the_bench_command_refuses_bad_arguments(argv: list[str]) -> None:
    from orpipe.bench.fuzz import EXIT_USAGE, main  # noqa: PLC0415

    assert main(argv) == EXIT_USAGE
