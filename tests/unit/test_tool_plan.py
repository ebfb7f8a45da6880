"""The tool executor's plan: reading calls, and which calls run together."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpipe.actors.tool_plan import Batch, PlannedCall, plan_round, read_call

ORDER_KEYS = ("depends_on", "_depends_on", "sequential")
NO_BATCH_KEYS = frozenset({*ORDER_KEYS, "no_batch"})


def call(name: str, call_id: str, arguments: Any = None, **kw: Any) -> dict[str, Any]:
    args = json.dumps(kw) if arguments is None else arguments
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": args}


def shape(calls: list[dict[str, Any]], cap: int = 4) -> list[tuple[list[str], bool]]:
    _, batches = plan_round(calls, cap)
    return [([c.call_id for c in b.calls], b.after_earlier) for b in batches]


# -- reading one call ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"city": "Oslo"}', {"city": "Oslo"}),
        (
            '{"n": 1, "tags": ["a", "b"], "more": {"deep": null}}',
            {
                "n": 1,
                "tags": ["a", "b"],
                "more": {"deep": None},
            },
        ),
        ("{}", {}),
        ("", {}),
        ("   ", {}),
        ("\n\t", {}),
        (None, {}),
        ({"already": "decoded"}, {"already": "decoded"}),
        ({}, {}),
    ],
)
def test_arguments_that_can_run(arguments: Any, expected: dict[str, Any]) -> None:
    item = {"call_id": "c", "name": "f", "arguments": arguments}
    planned = read_call(item, 0)
    assert planned.problem is None
    assert planned.arguments == expected
    assert planned.name == "f"
    assert planned.call_id == "c"


def test_a_call_without_arguments_at_all_has_empty_arguments() -> None:
    planned = read_call({"call_id": "c", "name": "f"}, 0)
    assert planned.problem is None
    assert planned.arguments == {}


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ("{nope", "its arguments are not valid JSON"),
        ('{"a": 1', "its arguments are not valid JSON"),
        ('{"a": 1} trailing', "its arguments are not valid JSON"),
        ("1e999", "its arguments are not valid JSON"),
        ("[1, 2]", "its arguments are not a JSON object"),
        ("[]", "its arguments are not a JSON object"),
        ('"text"', "its arguments are not a JSON object"),
        ("42", "its arguments are not a JSON object"),
        ("4.5", "its arguments are not a JSON object"),
        ("true", "its arguments are not a JSON object"),
        ("null", "its arguments are not a JSON object"),
        (17, "its arguments are not a JSON object"),
        ([{"a": 1}], "its arguments are not a JSON object"),
        (b'{"a": 1}', "its arguments are not a JSON object"),
    ],
)
def test_arguments_that_cannot_run_say_why(arguments: Any, problem: str) -> None:
    planned = read_call({"call_id": "c", "name": "f", "arguments": arguments}, 3)
    assert planned.problem == problem
    assert planned.arguments is None
    assert planned.index == 3
    assert planned.name == "f"
    assert planned.call_id == "c"
    assert planned.strings == ()
    assert planned.keys == frozenset()


def test_arguments_with_a_lone_surrogate_are_a_problem_not_an_exception() -> None:
    planned = read_call({"call_id": "c", "name": "f", "arguments": '{"emoji": "\ud83d"}'}, 0)
    assert planned.problem is not None
    assert planned.arguments is None


@pytest.mark.parametrize("name", [None, ""])
def test_a_call_without_a_name_cannot_run(name: str | None) -> None:
    item: dict[str, Any] = {"call_id": "c", "arguments": "{}"}
    if name is not None:
        item["name"] = name
    planned = read_call(item, 2)
    assert planned.problem == "the call has no name"
    assert planned.name == "?"
    assert planned.arguments is None
    assert planned.call_id == "c"
    assert planned.index == 2


def test_the_call_id_falls_back_to_the_item_id_then_to_the_position() -> None:
    assert read_call({"id": "fc_1", "name": "f"}, 0).call_id == "fc_1"
    assert read_call({"call_id": "c", "id": "fc_1", "name": "f"}, 0).call_id == "c"
    assert read_call({"call_id": "", "id": "fc_1", "name": "f"}, 0).call_id == "fc_1"
    assert read_call({"name": "f"}, 5).call_id == "call_5"
    assert read_call({"call_id": None, "name": "f"}, 7).call_id == "call_7"


def test_every_string_of_the_arguments_is_collected_keys_too() -> None:
    arguments = {"a": ["x", {"b": "y", "c": [1, 2.5, None, True]}], "d": {"e": {"f": "z"}}}
    planned = read_call({"call_id": "c", "name": "f", "arguments": json.dumps(arguments)}, 0)
    assert sorted(planned.strings) == ["a", "b", "c", "d", "e", "f", "x", "y", "z"]
    assert planned.keys == {"a", "d"}


def test_mentions_matches_substrings_of_any_string() -> None:
    planned = read_call(
        {"call_id": "c", "name": "f", "arguments": {"q": ["use call_77's result"]}}, 0
    )
    assert planned.mentions("call_77")
    assert planned.mentions("77")
    assert not planned.mentions("call_78")


def test_a_batch_is_named_after_its_calls() -> None:
    first = PlannedCall(index=0, call_id="1", name="search", arguments={})
    assert Batch(calls=(first,)).name == "search"
    assert not Batch(calls=(first,)).after_earlier


# -- batching -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cap", "sizes"),
    [(1, [1] * 9), (2, [2, 2, 2, 2, 1]), (4, [4, 4, 1]), (9, [9]), (50, [9])],
)
def test_calls_to_one_function_batch_up_to_the_cap(cap: int, sizes: list[int]) -> None:
    calls = [call("f", f"c{i}") for i in range(9)]
    batches = shape(calls, cap)
    assert [len(ids) for ids, _ in batches] == sizes
    assert [i for ids, _ in batches for i in ids] == [f"c{i}" for i in range(9)]
    assert not any(after for _, after in batches)


def test_two_calls_to_one_function_share_a_batch() -> None:
    assert shape([call("f", "1", q="a"), call("f", "2", q="b")]) == [(["1", "2"], False)]


def test_different_functions_never_share_a_batch() -> None:
    calls = [call("a", "1"), call("b", "2"), call("a", "3"), call("b", "4")]
    assert shape(calls) == [(["1", "3"], False), (["2", "4"], False)]


def test_a_full_batch_makes_way_for_a_new_one_of_the_same_function_only() -> None:
    calls = [call("a", "1"), call("a", "2"), call("b", "3"), call("a", "4"), call("b", "5")]
    assert shape(calls, cap=2) == [(["1", "2"], False), (["3", "5"], False), (["4"], False)]


def test_no_calls_no_batches() -> None:
    assert plan_round([], 4) == ([], [])


@pytest.mark.parametrize("key", ORDER_KEYS)
def test_ordering_keys_wait_for_everything_before(key: str) -> None:
    calls = [call("f", "1"), call("f", "2", **{key: True}), call("f", "3")]
    # "3" may not join "1"'s batch: that batch started before the barrier.
    assert shape(calls) == [(["1"], False), (["2"], True), (["3"], False)]


@pytest.mark.parametrize("key", ORDER_KEYS)
def test_the_barrier_closes_the_open_batches_of_every_function(key: str) -> None:
    calls = [
        call("a", "1"),
        call("b", "2"),
        call("c", "3", **{key: ["1"]}),
        call("a", "4"),
        call("b", "5"),
        call("a", "6"),
    ]
    assert shape(calls) == [
        (["1"], False),
        (["2"], False),
        (["3"], True),
        (["4", "6"], False),
        (["5"], False),
    ]


@pytest.mark.parametrize("key", ORDER_KEYS)
def test_an_ordering_key_on_the_first_call_still_gets_its_own_batch(key: str) -> None:
    calls = [call("f", "1", **{key: None}), call("f", "2"), call("f", "3")]
    assert shape(calls) == [(["1"], True), (["2", "3"], False)]


def test_two_ordered_calls_in_a_row_each_wait() -> None:
    calls = [call("f", "1", sequential=True), call("f", "2", depends_on="1")]
    assert shape(calls) == [(["1"], True), (["2"], True)]


def test_no_batch_keeps_a_call_alone_without_waiting() -> None:
    calls = [call("f", "1"), call("f", "2", no_batch=True), call("f", "3")]
    assert shape(calls) == [(["1", "3"], False), (["2"], False)]


def test_no_batch_calls_never_batch_with_each_other() -> None:
    calls = [call("f", "1", no_batch=True), call("f", "2", no_batch=True)]
    assert shape(calls) == [(["1"], False), (["2"], False)]


def test_mentioning_an_earlier_call_id_anywhere_makes_a_call_wait() -> None:
    deep = {"steps": [{"use": "output of call_A please"}]}
    calls = [call("f", "call_A"), call("f", "call_B", **deep)]
    assert shape(calls) == [(["call_A"], False), (["call_B"], True)]


def test_mentioning_an_earlier_call_id_deep_in_lists_waits() -> None:
    deep = {"x": [[[{"y": [[["see call_A"]]]}]]]}
    calls = [call("f", "call_A"), call("f", "call_B", **deep)]
    assert shape(calls)[1] == (["call_B"], True)


def test_mentioning_an_earlier_call_id_as_a_key_waits() -> None:
    calls = [call("f", "call_A"), call("f", "call_B", outer={"call_A": 1})]
    assert shape(calls)[1] == (["call_B"], True)
    top = [call("f", "call_A"), call("f", "call_B", **{"call_A": 1})]
    assert shape(top)[1] == (["call_B"], True)


def test_mentioning_an_earlier_call_of_another_function_waits_too() -> None:
    calls = [call("search", "s1"), call("fetch", "f1", url="result of s1"), call("search", "s2")]
    assert shape(calls) == [(["s1"], False), (["f1"], True), (["s2"], False)]


def test_mentioning_a_later_call_id_prevents_batching_only() -> None:
    calls = [call("f", "x1", next="x2"), call("f", "x2")]
    assert shape(calls) == [(["x1"], False), (["x2"], False)]


def test_a_call_left_out_of_a_batch_by_a_mention_starts_the_next_batch() -> None:
    calls = [call("f", "x1", next="x2"), call("f", "x2"), call("f", "x3")]
    assert shape(calls) == [(["x1"], False), (["x2", "x3"], False)]


def test_mentioning_an_unrelated_id_batches_normally() -> None:
    calls = [call("f", "x1", ref="call_zzz"), call("f", "x2", ref="call_yyy")]
    assert shape(calls) == [(["x1", "x2"], False)]


def test_a_call_mentioning_its_own_id_is_not_held_back() -> None:
    calls = [call("f", "x1"), call("f", "x2", me="x2")]
    assert shape(calls) == [(["x1", "x2"], False)]


def test_a_mention_of_an_unrunnable_call_does_not_make_a_call_wait() -> None:
    calls = [call("f", "bad", arguments="[1]"), call("f", "x2", ref="bad")]
    assert shape(calls) == [(["x2"], False)]


def test_unrunnable_calls_are_planned_but_never_batched() -> None:
    calls = [
        call("f", "1"),
        call("f", "2", arguments="{bad"),
        {"call_id": "3", "arguments": "{}"},
        call("f", "4", arguments="[]"),
        call("f", "5"),
    ]
    planned, batches = plan_round(calls, 4)
    assert [p.call_id for p in planned] == ["1", "2", "3", "4", "5"]
    assert [p.index for p in planned] == [0, 1, 2, 3, 4]
    assert [p.problem is None for p in planned] == [True, False, False, False, True]
    assert [[c.call_id for c in b.calls] for b in batches] == [["1", "5"]]


def test_planned_calls_keep_the_models_order_across_batches() -> None:
    calls = [call("b", "1"), call("a", "2"), call("b", "3", sequential=1), call("a", "4")]
    planned, batches = plan_round(calls, 4)
    assert [(p.index, p.call_id, p.name) for p in planned] == [
        (0, "1", "b"),
        (1, "2", "a"),
        (2, "3", "b"),
        (3, "4", "a"),
    ]
    assert [c.index for b in batches for c in b.calls] == [0, 1, 2, 3]


def test_a_round_of_only_unrunnable_calls_has_no_batches() -> None:
    planned, batches = plan_round([call("f", "1", arguments="nope"), {"call_id": "2"}], 4)
    assert len(planned) == 2
    assert batches == []


# -- the rules as a property ----------------------------------------------------------

NAMES = ("a", "b", "c")


def call_id(i: int) -> str:
    # Delimited so that no id is a substring of another ("k1-" is not in "k11-").
    return f"k{i}-"


filler = st.text(alphabet="xyz ", max_size=5)


@st.composite
def rounds(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[int, set[int]]]:
    """Random calls, and which call ids each one's arguments mention."""
    count = draw(st.integers(0, 20))
    calls: list[dict[str, Any]] = []
    mentions: dict[int, set[int]] = {}
    for i in range(count):
        name = draw(st.sampled_from(NAMES))
        if draw(st.integers(0, 9)) == 0:
            calls.append(call(name, call_id(i), arguments=draw(st.sampled_from(["[]", "{x", "7"]))))
            continue
        arguments: dict[str, Any] = {"q": draw(filler)}
        for key in draw(st.sets(st.sampled_from(sorted(NO_BATCH_KEYS)), max_size=2)):
            arguments[key] = draw(st.sampled_from([True, 1, "yes", None, [], False]))
        referenced = set(draw(st.sets(st.integers(0, max(count - 1, 0)), max_size=2))) - {i}
        for other in referenced:
            where = draw(st.sampled_from(["value", "nested", "key", "substring"]))
            target = call_id(other)
            if where == "value":
                arguments[f"r{other}"] = target
            elif where == "nested":
                arguments[f"r{other}"] = [{"deep": [draw(filler), target]}]
            elif where == "key":
                arguments[f"r{other}"] = {target: draw(filler)}
            else:
                arguments[f"r{other}"] = f"{draw(filler)}{target}{draw(filler)}"
        mentions[i] = referenced
        calls.append(call(name, call_id(i), arguments=json.dumps(arguments)))
    return calls, mentions


@given(rounds(), st.integers(1, 6))
def test_the_plan_is_a_partition_that_respects_every_rule(
    generated: tuple[list[dict[str, Any]], dict[int, set[int]]], cap: int
) -> None:
    calls, mentions = generated
    planned, batches = plan_round(calls, cap)

    assert [p.index for p in planned] == list(range(len(calls)))
    assert [p.call_id for p in planned] == [c["call_id"] for c in calls]
    runnable = {p.index for p in planned if p.problem is None}
    assert runnable == set(mentions)
    seen = [c.index for b in batches for c in b.calls]
    assert sorted(seen) == sorted(runnable)  # each runnable call exactly once, no other

    # Batches are listed by their first call, calls within a batch in model order.
    assert [b.calls[0].index for b in batches] == sorted(b.calls[0].index for b in batches)
    for batch in batches:
        indexes = [c.index for c in batch.calls]
        assert indexes == sorted(indexes)
        assert 1 <= len(batch.calls) <= cap
        assert len({c.name for c in batch.calls}) == 1
        for a in indexes:
            for b in indexes:
                assert b not in mentions[a]
        if len(batch.calls) > 1:
            assert not batch.after_earlier
            assert not any(c.keys & NO_BATCH_KEYS for c in batch.calls)

    for batch in batches:
        for c in batch.calls:
            ordered = bool(c.keys & set(ORDER_KEYS))
            waits = ordered or any(m < c.index and m in runnable for m in mentions[c.index])
            if waits or c.keys & NO_BATCH_KEYS:
                assert batch.calls == (c,)
            assert batch.after_earlier is waits or len(batch.calls) > 1

    # Nothing after a barrier shares a batch with anything before it.
    barriers = [b.calls[0].index for b in batches if b.after_earlier]
    for batch in batches:
        for barrier in barriers:
            before = [c.index < barrier for c in batch.calls]
            assert all(before) or not any(before)


@given(st.lists(st.sampled_from(NAMES), max_size=30), st.integers(1, 6))
def test_independent_calls_fill_batches_greedily(names: list[str], cap: int) -> None:
    calls = [call(name, call_id(i)) for i, name in enumerate(names)]
    _, batches = plan_round(calls, cap)
    for name in NAMES:
        count = names.count(name)
        sizes = [len(b.calls) for b in batches if b.name == name]
        assert len(sizes) == math.ceil(count / cap)
        assert all(size == cap for size in sizes[:-1])
    assert not any(b.after_earlier for b in batches)
