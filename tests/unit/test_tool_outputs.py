"""What a tool call becomes: output text, the item sent upstream, the user's status line."""

from __future__ import annotations

from typing import Any

import pytest

from actors.tool_outputs import CallOutcome, output_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        (None, ""),
        (b"caf\xc3\xa9", "café"),
        (b"\xff", "\ufffd"),
        ({"a": [1, True, None]}, '{"a":[1,true,null]}'),
        ([1, 2.5], "[1,2.5]"),
        (7, "7"),
        (False, "false"),
    ],
)
def test_values_become_text(value: Any, text: str) -> None:
    assert output_text(value, 1000) == text


def test_what_json_cannot_hold_is_given_by_str() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing"

    assert output_text(Thing(), 1000) == "thing"
    assert output_text({1, 2}, 1000) in ("[1,2]", "{1, 2}")  # msgspec encodes sets as arrays
    assert output_text({"x": Thing()}, 1000).startswith("{")


def test_long_output_is_cut_with_a_note() -> None:
    assert output_text("x" * 100, 100) == "x" * 100
    cut = output_text("y" * 250, 100)
    assert cut.startswith("y" * 100) and "y" * 101 not in cut
    assert "the first 100 of 250 characters are kept" in cut


def outcome(verdict: Any, text: str = "why", elapsed: float | None = None) -> CallOutcome:
    return CallOutcome(
        call_id="c1", name="get_weather", verdict=verdict, text=text, elapsed_s=elapsed
    )


def test_a_completed_call_is_completed_upstream() -> None:
    assert outcome("completed", "21 °C").output_item() == {
        "type": "function_call_output",
        "call_id": "c1",
        "output": "21 °C",
        "status": "completed",
    }


@pytest.mark.parametrize("verdict", ["failed", "timed_out", "skipped", "refused", "cancelled"])
def test_every_other_verdict_is_incomplete_with_the_reason(verdict: str) -> None:
    item = outcome(verdict, "timed out after 60 s").output_item()
    assert item["status"] == "incomplete"  # what OpenRouter accepts (not failed/skipped)
    assert item["output"] == "Error: timed out after 60 s"


@pytest.mark.parametrize(
    ("verdict", "elapsed", "line"),
    [
        ("completed", 0.8, "get_weather finished in 0.8 s"),
        ("completed", 0.0123, "get_weather finished in 12 ms"),
        ("completed", 250.0, "get_weather finished in 250 s"),
        ("completed", None, "get_weather finished in ?"),
        ("timed_out", 60.0, "get_weather failed: why"),
        ("skipped", None, "get_weather skipped: why"),
    ],
)
def test_status_lines(verdict: str, elapsed: float | None, line: str) -> None:
    assert outcome(verdict, elapsed=elapsed).status_line() == line
