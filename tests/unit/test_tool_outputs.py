"""What a tool call becomes: output text, the item sent upstream, the user's status line."""

from __future__ import annotations

import math
from typing import Any

import pytest

from orpipe.actors.tool_outputs import CallOutcome, output_text


class Thing:
    def __str__(self) -> str:
        return "thing"


# -- output text ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ("", ""),
        ('{"already": "json"}', '{"already": "json"}'),  # a string is never re-encoded
        (None, ""),
        (b"caf\xc3\xa9", "café"),
        (b"", ""),
        (bytearray(b"abc"), "abc"),
        (b"\xff", "\ufffd"),
        (b"ok\xfe\xffok", "ok\ufffd\ufffdok"),
        ({"a": [1, True, None]}, '{"a":[1,true,null]}'),
        ({"städte": ["Zürich"]}, '{"städte":["Zürich"]}'),
        ({}, "{}"),
        ([1, 2.5], "[1,2.5]"),
        ([], "[]"),
        ((1, "two"), '[1,"two"]'),
        (7, "7"),
        (-3, "-3"),
        (2**70, str(2**70)),
        (2.5, "2.5"),
        (False, "false"),
        (True, "true"),
    ],
)
def test_values_become_text(value: Any, text: str) -> None:
    assert output_text(value, 1000) == text


def test_an_object_json_cannot_hold_is_given_by_str() -> None:
    assert output_text(Thing(), 1000) == "thing"
    assert output_text(object, 1000) == "<class 'object'>"


def test_a_set_becomes_a_json_array() -> None:
    assert output_text({1}, 1000) == "[1]"
    assert sorted(output_text({1, 2}, 1000).strip("[]").split(",")) == ["1", "2"]
    assert output_text(frozenset(), 1000) == "[]"


def test_a_container_with_something_json_cannot_hold_is_given_whole_by_str() -> None:
    value = {"x": [1, Thing()]}
    assert output_text(value, 1000) == str(value)
    thing = Thing()
    assert output_text([thing], 1000) == str([thing])


def test_a_mapping_with_keys_json_cannot_hold_is_given_by_str() -> None:
    assert output_text({(1, 2): "pair"}, 1000) == "{(1, 2): 'pair'}"


def test_a_value_that_contains_itself_is_given_by_str() -> None:
    value: list[Any] = []
    value.append(value)
    assert output_text(value, 1000) == "[[...]]"


# -- cutting long output ----------------------------------------------------------------


def test_output_exactly_at_the_limit_is_not_cut() -> None:
    assert output_text("x" * 100, 100) == "x" * 100
    assert output_text(b"y" * 100, 100) == "y" * 100


def test_output_one_past_the_limit_is_cut() -> None:
    cut = output_text("x" * 101, 100)
    assert cut == "x" * 100 + "\n…[output cut: the first 100 of 101 characters are kept]"


def test_long_output_keeps_its_head_and_says_how_much_was_kept() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(250))
    cut = output_text(text, 100)
    head, note = cut.split("\n", 1)
    assert head == text[:100]
    assert note == "…[output cut: the first 100 of 250 characters are kept]"


def test_large_counts_in_the_note_have_thousands_separators() -> None:
    cut = output_text("z" * 1_234_567, 10_000)
    assert cut.startswith("z" * 10_000 + "\n")
    assert cut.endswith("[output cut: the first 10,000 of 1,234,567 characters are kept]")


def test_long_json_and_bytes_are_cut_by_characters_of_their_text() -> None:
    cut = output_text(list(range(100)), 10)  # "[0,1,...,99]": 291 characters
    assert cut.startswith("[0,1,2,3,4\n")
    assert cut.endswith("the first 10 of 291 characters are kept]")
    cut_bytes = output_text("é".encode() * 20, 5)  # 40 bytes, 20 characters
    assert cut_bytes.startswith("ééééé\n")
    assert "the first 5 of 20 characters are kept" in cut_bytes


# -- the output item -----------------------------------------------------------------------


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


def test_a_completed_calls_output_is_passed_as_it_is() -> None:
    assert outcome("completed", "").output_item()["output"] == ""
    assert outcome("completed", "Error: no").output_item()["output"] == "Error: no"


@pytest.mark.parametrize("verdict", ["failed", "timed_out", "skipped", "refused", "cancelled"])
def test_every_other_verdict_is_incomplete_with_the_reason(verdict: str) -> None:
    assert outcome(verdict, "timed out after 60 s").output_item() == {
        "type": "function_call_output",
        "call_id": "c1",
        "output": "Error: timed out after 60 s",
        "status": "incomplete",  # what OpenRouter accepts (not failed/skipped)
    }


def test_each_output_item_is_a_fresh_dict() -> None:
    done = outcome("completed", "ok")
    first = done.output_item()
    first["output"] = "changed"
    assert done.output_item()["output"] == "ok"


# -- the status line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "elapsed", "line"),
    [
        ("completed", 0.8, "get_weather finished in 0.8 s"),
        ("completed", 0.1, "get_weather finished in 0.1 s"),
        ("completed", 0.0999, "get_weather finished in 100 ms"),
        ("completed", 0.0123, "get_weather finished in 12 ms"),
        ("completed", 0.0, "get_weather finished in 0 ms"),
        ("completed", 12.34, "get_weather finished in 12.3 s"),
        ("completed", 99.9, "get_weather finished in 99.9 s"),
        ("completed", 100.0, "get_weather finished in 100 s"),
        ("completed", 250.0, "get_weather finished in 250 s"),
        ("completed", None, "get_weather finished in ?"),
        ("completed", math.nan, "get_weather finished in ?"),
        ("completed", math.inf, "get_weather finished in ?"),
        ("failed", 1.0, "get_weather failed: why"),
        ("timed_out", 60.0, "get_weather failed: why"),
        ("refused", None, "get_weather failed: why"),
        ("cancelled", None, "get_weather failed: why"),
        ("skipped", None, "get_weather skipped: why"),
    ],
)
def test_status_lines(verdict: str, elapsed: float | None, line: str) -> None:
    assert outcome(verdict, elapsed=elapsed).status_line() == line


def test_a_completed_calls_line_does_not_repeat_its_output() -> None:
    assert outcome("completed", "secret output", 2.0).status_line() == (
        "get_weather finished in 2.0 s"
    )
