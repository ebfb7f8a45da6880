"""The tool executor's plan: reading calls, and which calls run together."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.tool_plan import plan_round, read_call


def call(name: str, call_id: str, arguments: Any = None, **kw: Any) -> dict[str, Any]:
    args = json.dumps(kw) if arguments is None else arguments
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": args}


def shape(calls: list[dict[str, Any]], cap: int = 4) -> list[tuple[list[str], bool]]:
    _, batches = plan_round(calls, cap)
    return [([c.call_id for c in b.calls], b.after_earlier) for b in batches]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Oslo"}', {"city": "Oslo"}),
        ("", {}),
        ("   ", {}),
        (None, {}),
        ({"already": "decoded"}, {"already": "decoded"}),
    ],
)
def test_arguments_that_can_run(arguments: Any, expected: dict[str, Any]) -> None:
    item = {"call_id": "c", "name": "f", "arguments": arguments}
    planned = read_call(item, 0)
    assert planned.problem is None
    assert planned.arguments == expected


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("{nope", "its arguments are not valid JSON"),
        ("[1, 2]", "its arguments are not a JSON object"),
        ('"text"', "its arguments are not a JSON object"),
        ("42", "its arguments are not a JSON object"),
        (17, "its arguments are not a JSON object"),
    ],
)
def test_arguments_that_cannot_run_say_why(arguments: Any, problem: str) -> None:
    planned = read_call({"call_id": "c", "name": "f", "arguments": arguments}, 3)
    assert planned.problem == problem
    assert planned.arguments is None
    assert planned.index == 3


def test_a_call_without_a_name_cannot_run_and_ids_fall_back() -> None:
    assert read_call({"call_id": "c", "arguments": "{}"}, 0).problem == "the call has no name"
    assert read_call({"id": "fc_1", "name": "f"}, 0).call_id == "fc_1"
    assert read_call({"name": "f"}, 5).call_id == "call_5"


@pytest.mark.parametrize(("cap", "sizes"), [(1, [1] * 9), (2, [2, 2, 2, 2, 1]), (4, [4, 4, 1])])
def test_calls_to_one_function_batch_up_to_the_cap(cap: int, sizes: list[int]) -> None:
    calls = [call("f", f"c{i}") for i in range(9)]
    assert [len(ids) for ids, _ in shape(calls, cap)] == sizes


def test_different_functions_never_share_a_batch() -> None:
    calls = [call("a", "1"), call("b", "2"), call("a", "3"), call("b", "4")]
    assert shape(calls) == [(["1", "3"], False), (["2", "4"], False)]


@pytest.mark.parametrize("key", ["depends_on", "_depends_on", "sequential"])
def test_ordering_keys_wait_for_everything_before(key: str) -> None:
    calls = [call("f", "1"), call("f", "2", **{key: True}), call("f", "3")]
    # "3" may not join "1"'s batch: that batch started before the barrier.
    assert shape(calls) == [(["1"], False), (["2"], True), (["3"], False)]


def test_no_batch_keeps_a_call_alone_without_waiting() -> None:
    calls = [call("f", "1"), call("f", "2", no_batch=True), call("f", "3")]
    assert shape(calls) == [(["1", "3"], False), (["2"], False)]


def test_mentioning_an_earlier_call_id_anywhere_makes_a_call_wait() -> None:
    deep = {"steps": [{"use": "output of call_A please"}]}
    calls = [call("f", "call_A"), call("f", "call_B", **deep)]
    assert shape(calls) == [(["call_A"], False), (["call_B"], True)]
    as_key = [call("f", "call_A"), call("f", "call_B", **{"call_A": 1})]
    assert shape(as_key)[1] == (["call_B"], True)


def test_mentioning_a_later_call_id_prevents_batching_only() -> None:
    calls = [call("f", "x1", next="x2"), call("f", "x2")]
    assert shape(calls) == [(["x1"], False), (["x2"], False)]


def test_unrunnable_calls_are_planned_but_never_batched() -> None:
    calls = [call("f", "1"), call("f", "2", arguments="{bad"), call("f", "3")]
    planned, batches = plan_round(calls, 4)
    assert [p.call_id for p in planned] == ["1", "2", "3"]
    assert [p.index for p in planned] == [0, 1, 2]
    assert [[c.call_id for c in b.calls] for b in batches] == [["1", "3"]]


names = st.sampled_from(["a", "b", "c"])
extras = st.sampled_from([{}, {}, {"no_batch": 1}, {"sequential": 1}, {"depends_on": "c1"}])


@given(st.lists(st.tuples(names, extras, st.booleans()), max_size=25), st.integers(1, 6))
def test_the_plan_is_a_partition_that_respects_every_rule(
    spec: list[tuple[str, dict[str, Any], bool]], cap: int
) -> None:
    calls = []
    for i, (name, extra, refers) in enumerate(spec):
        args = dict(extra)
        if refers and i:
            args["ref"] = f"c{i - 1}"
        calls.append(call(name, f"c{i}", **args))
    _, batches = plan_round(calls, cap)
    seen = [c.index for b in batches for c in b.calls]
    assert sorted(seen) == list(range(len(calls)))  # each call exactly once
    for batch in batches:
        assert len(batch.calls) <= cap
        assert len({c.name for c in batch.calls}) == 1
        indexes = [c.index for c in batch.calls]
        assert indexes == sorted(indexes)
        for a in batch.calls:
            for b in batch.calls:
                if a is not b:
                    assert not a.mentions(b.call_id)
        if len(batch.calls) > 1:
            assert not any(
                c.keys & {"depends_on", "_depends_on", "sequential", "no_batch"}
                for c in batch.calls
            )
