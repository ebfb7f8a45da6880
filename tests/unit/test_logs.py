"""The engine's logging: context, per-request levels, the ring, redaction, sinks off the loop."""

from __future__ import annotations

import ast
import base64
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from orpipe.engine.logs import (
    LogSettings,
    RequestLogs,
    logger,
    redact,
    register_secret,
    request_context,
    request_logs,
    setup_logging,
    stop_logging,
)


class Stream(io.StringIO):
    """A text stream that remembers which threads wrote to it."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def write(self, text: str) -> int:
        self.threads.add(threading.get_ident())
        return super().write(text)


@pytest.fixture
def console() -> Iterator[Stream]:
    stream = Stream()
    setup_logging(LogSettings(level="INFO", stream=stream, ring_lines=5, ring_requests=3))
    try:
        yield stream
    finally:
        stop_logging()


def written(stream: Stream) -> str:
    logger.complete()  # the console sink is queued: wait for its thread
    return stream.getvalue()


def test_records_carry_the_request_context_into_child_tasks(console: Stream) -> None:
    async def main() -> None:
        async def child() -> None:
            logger.info("from a child task")

        with request_context("req-1", user_id="u-7", chat_id="c-3"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
        logger.info("outside any request")

    trio.run(main)
    lines = written(console).splitlines()
    assert any("req=req-1 user=u-7" in line and "from a child task" in line for line in lines)
    assert any("req=- user=-" in line and "outside any request" in line for line in lines)
    ring = request_logs().lines("req-1")
    assert len(ring) == 1 and ring[0].endswith("from a child task")
    assert request_logs().lines("-") == []  # records without a request are not kept


def test_a_users_level_applies_to_their_requests_only(console: Stream) -> None:
    with request_context("req-debug", user_id="curious", level="debug"):
        logger.debug("detail for the curious user")
    with request_context("req-plain", user_id="other"):
        logger.debug("detail nobody asked for")
        logger.info("ordinary line")
    text = written(console)
    assert "detail for the curious user" in text
    assert "detail nobody asked for" not in text
    assert "ordinary line" in text
    assert request_logs().lines("req-plain")[0].endswith("ordinary line")


def test_the_console_is_written_by_a_worker_thread(console: Stream) -> None:
    logger.warning("off the loop")
    assert "off the loop" in written(console)
    assert threading.get_ident() not in console.threads


def test_the_ring_is_bounded_in_lines_and_in_requests(console: Stream) -> None:
    for n in range(8):
        with request_context("req-long"):
            logger.info("line {}", n)
    lines = request_logs().lines("req-long")
    assert [line.rsplit(" ", 1)[1] for line in lines] == ["3", "4", "5", "6", "7"]
    for name in ("a", "b", "c"):
        with request_context(f"req-{name}"):
            logger.info("hello")
    assert request_logs().lines("req-long") == []  # the least recently used went first
    stats = request_logs().statistics()
    assert stats["requests"] == 3 and stats["requests_capacity"] == 3
    assert stats["lines"] == 3 and stats["lines_per_request"] == 5
    assert stats["dropped_requests"] >= 1
    request_logs().forget("req-a")
    assert request_logs().lines("req-a") == []


def test_a_second_setup_replaces_the_sinks_instead_of_adding_more(console: Stream) -> None:
    second = Stream()
    setup_logging(LogSettings(level="INFO", stream=second, ring_lines=5, ring_requests=3))
    logger.info("once")
    assert written(second).count("once") == 1
    assert "once" not in written(console)


def test_the_adapters_standard_logging_joins_the_same_setup(console: Stream) -> None:
    with request_context("req-std", user_id="u-1"):
        logging.getLogger("orpipe.adapters.example").warning("stored %d files", 3)
    text = written(console)
    assert "adapters.example" in text and "stored 3 files" in text and "req=req-std" in text
    assert request_logs().lines("req-std")[0].endswith("stored 3 files")
    stop_logging()  # handed back: the host's standard logging sees the records again
    assert logging.getLogger("orpipe").propagate
    assert not [h for h in logging.getLogger("orpipe").handlers if type(h).__name__ == "_ToLoguru"]


#: The standard-library logger names the project may use (engine/logs.py, "Names").
AREA_LOGGERS = {
    "orpipe",
    "orpipe.owui",
    "orpipe.catalogue",
    "orpipe.persistence",
    "orpipe.bridge",
    "orpipe.cluster",
    "orpipe.telemetry",
}
ROOT = Path(__file__).resolve().parents[2]


def test_every_standard_library_logger_is_named_after_its_area() -> None:
    """``logging.getLogger`` takes one of the area names, written out: never ``__name__``,
    whose module paths change whenever a module moves, and never a name outside ``orpipe``."""
    found: dict[str, str] = {}
    for folder in ("engine", "actors", "adapters", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "engine" / "logs.py":
                continue  # it routes the loggers; it writes no records through them
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "getLogger"
                ):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    (arg,) = node.args
                    found[where] = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg)
    assert found, "no logger found: the scan is looking in the wrong place"
    assert {where: name for where, name in found.items() if name not in AREA_LOGGERS} == {}


# -- redaction ----------------------------------------------------------------------------

KEY = "sk-or-v1-" + "a1b2c3d4" * 8


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (f"calling with key {KEY}", KEY, "sk-or-v1-[redacted]"),
        ("Authorization: Bearer abcdefghijklmnop123", "abcdefghijklmnop123", "[redacted]"),
        ('{"authorization": "Bearer tok_1234567890"}', "tok_1234567890", "[redacted]"),
        (
            "sent bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
            "eyJhbGciOiJIUzI1NiJ9",
            "Bearer [redacted]",
        ),
        (
            "image data:image/png;base64," + "iVBORw0KGgo" * 40,
            "iVBORw0KGgoiVBORw0KGgo",
            "data:image/png;base64,[",
        ),
        ("blob " + "QUJD" * 80 + " end", "QUJDQUJDQUJD", "[base64, 320 chars]"),
    ],
)
def test_redaction_removes_keys_headers_and_blobs(text: str, gone: str, kept: str) -> None:
    cleaned = redact(text)
    assert gone not in cleaned
    assert kept in cleaned


def test_ordinary_text_is_left_alone() -> None:
    text = "turn 2 failed: OpenRouter answered HTTP 429 (rate limited); retry in 5 s"
    assert redact(text) == text


def test_a_registered_secret_and_every_base64_form_of_it_are_removed() -> None:
    secret = "artifact-key-Zq8x!3"
    register_secret(secret)
    samples = [
        f"key={secret}",
        base64.b64encode(secret.encode()).decode(),
        base64.b64encode(b"user:" + secret.encode()).decode(),  # inside a longer value
        base64.b64encode(b"xy" + secret.encode() + b"tail").decode(),
        base64.urlsafe_b64encode(b"a" + secret.encode()).decode(),
    ]
    for sample in samples:
        cleaned = redact(sample)
        assert secret not in cleaned
        assert base64.b64encode(secret.encode()).decode()[:12] not in cleaned
        assert "[secret]" in cleaned


@given(st.binary(min_size=0, max_size=3), st.binary(min_size=0, max_size=6))
def test_a_registered_secret_is_found_at_any_alignment(prefix: bytes, suffix: bytes) -> None:
    secret = "hypothesis-secret-0042"
    register_secret(secret)
    encoded = base64.b64encode(prefix + secret.encode() + suffix).decode()
    # Some characters at the edges mix in the neighbours' bits; the middle never survives.
    middle = base64.b64encode(secret.encode()).decode()[4:16]
    assert middle not in redact(encoded)


def test_the_sinks_see_redacted_messages_and_tracebacks(console: Stream) -> None:
    try:
        raise RuntimeError(f"upstream said no to {KEY}")
    except RuntimeError:
        with request_context("req-tb"):
            logger.exception("request failed with key {}", KEY)
    text = written(console)
    assert KEY not in text and "request failed with key sk-or-v1-[redacted]" in text
    assert "RuntimeError: upstream said no to sk-or-v1-[redacted]" in text
    assert all(KEY not in line for line in request_logs().lines("req-tb"))


def test_bad_settings_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="TRACE, DEBUG, INFO"):
        LogSettings(level="chatty")
    with pytest.raises(ValueError, match="at least one"):
        LogSettings(ring_lines=0)
    ring = RequestLogs(lines=1, requests=1)
    ring.add("r", "a")
    ring.add("r", "b")
    assert ring.lines("r") == ["b"]
