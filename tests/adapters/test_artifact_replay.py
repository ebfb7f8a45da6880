"""Replay of stored artifacts into Responses input: order, pairing, pruning, normalisation."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.artifact_replay import (
    ReplayPlan,
    ReplayReport,
    normalise_item,
    orphan_items,
    pair_function_calls,
    prune_tool_output,
    referenced_ids,
    replay_items,
    select_orphans,
    split_at_markers,
    turn_indices,
)
from orpipe.adapters.openwebui.request import MappedRequest, RequestSettings, build_request
from orpipe.adapters.openwebui.request.messages import assistant_id as _assistant_id
from orpipe.engine.artifacts import Artifact, find_markers, marker_line
from orpipe.engine.errors import UsageError
from orpipe.engine.messages import thaw_json

REASONER = ModelInfo(
    openrouter_id="anthropic/claude-sonnet-4",
    sub_id="anthropic.claude-sonnet-4",
    name="Anthropic: Claude Sonnet 4",
    supported_parameters=frozenset({"reasoning", "tools", "max_tokens"}),
)
PLAIN = ModelInfo(
    openrouter_id="mistralai/mistral-7b-instruct",
    sub_id="mistralai.mistral-7b-instruct",
    name="Mistral: Mistral 7B Instruct",
    supported_parameters=frozenset({"tools"}),
)
CHAT = "chat-1"


def aid(n: int) -> str:
    """A valid artifact id (20 Crockford digits) that sorts by ``n``."""
    return f"{n:020d}"


def art(
    n: int, payload: Mapping[str, Any], *, message_id: str = "m1", chat: str = CHAT
) -> Artifact:
    return Artifact(
        artifact_id=aid(n),
        chat_id=chat,
        message_id=message_id,
        item_type=str(payload.get("type", "reasoning")),
        payload=payload,
    )


def mark(*numbers: int) -> str:
    return "\n".join(marker_line(aid(n)) for n in numbers)


def reasoning(n: int, text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": f"rs_{n}",
        "summary": [{"type": "summary_text", "text": text}],
        "encrypted_content": f"gAAAAB{n}==",
        "format": "anthropic-claude-v1",
        "signature": f"EqQBCkgIARABGAIiQL{n}+/=",
    }


def call(
    call_id: str, name: str = "weather", arguments: str = '{"city": "Oslo"}'
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def output(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def done(item: Mapping[str, Any]) -> dict[str, Any]:
    """A stored item as it is replayed: plain JSON, with a status."""
    plain = thaw_json(item)
    return {**plain, "status": plain.get("status", "completed")}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def said(index: int, text: str, ordinal: int = 0) -> dict[str, Any]:
    key = text if ordinal == 0 else f"{ordinal}\n{text}"
    return {
        "type": "message",
        "role": "assistant",
        "id": _assistant_id(index, key),
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def plan(
    *artifacts: Artifact, orphans: tuple[Artifact, ...] = (), retention: int = 10
) -> ReplayPlan:
    return ReplayPlan(
        artifacts={a.artifact_id: a for a in artifacts},
        orphans=orphans,
        tool_output_retention_turns=retention,
        chat_id=CHAT,
    )


def build(
    messages: list[dict[str, Any]], replay: ReplayPlan | None, model: ModelInfo = REASONER
) -> MappedRequest:
    return build_request(
        {"messages": messages}, model=model, settings=RequestSettings(), replay=replay
    )


def sent_input(mapped: MappedRequest) -> list[dict[str, Any]]:
    """``input`` exactly as it goes upstream, through a JSON round trip."""
    body = json.loads(json.dumps(mapped.request.body()))
    return list(body["input"])


def simple_text_item(text: str, ordinal: int) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "ordinal": ordinal, "text": text}


# --------------------------------------------------------------------------
# A three-turn conversation rebuilt exactly
# --------------------------------------------------------------------------

R1 = art(1, reasoning(1, "Two cities: call the tool twice."))
CALL_A = art(2, call("call_a"))
CALL_B = art(3, call("call_b", arguments='{"city": "Bergen"}'))
CALL_C = art(4, call("call_c", name="radar"))  # its output was never stored
OUT_B = art(5, output("call_b", "7 °C"))
OUT_A = art(6, output("call_a", "4 °C"))
R2 = art(7, reasoning(7, "Tomorrow: forecast tool."), message_id="m2")
CALL_D = art(8, call("call_d", name="forecast"), message_id="m2")
OUT_D = art(9, output("call_d", "rain"), message_id="m2")
ALL = (R1, CALL_A, CALL_B, CALL_C, OUT_B, OUT_A, R2, CALL_D, OUT_D)

THREE_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Oslo and Bergen?"},
    {"role": "assistant", "content": f"{mark(1, 2, 3, 4, 5, 6)}\n\nOslo 4 °C, Bergen 7 °C."},
    {"role": "user", "content": "And tomorrow?"},
    {
        "role": "assistant",
        "content": f"Let me check.\n\n{mark(7)}\n\n{mark(8, 9)}\n\nTomorrow: rain.",
    },
    {"role": "user", "content": "Thanks"},
]


def test_a_three_turn_conversation_is_rebuilt_in_order() -> None:
    mapped = build(THREE_TURNS, plan(*ALL))

    assert sent_input(mapped) == [
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "Be brief."}],
        },
        user("Weather in Oslo and Bergen?"),
        done(R1.payload),
        done(CALL_A.payload),
        done(CALL_B.payload),
        # call_c has no output: left out. The outputs keep their stored order.
        done(OUT_B.payload),
        done(OUT_A.payload),
        said(2, "Oslo 4 °C, Bergen 7 °C."),
        user("And tomorrow?"),
        said(4, "Let me check."),
        done(R2.payload),
        done(CALL_D.payload),
        done(OUT_D.payload),
        said(4, "Tomorrow: rain.", 1),
        user("Thanks"),
    ]
    assert mapped.warnings == ("function_call call_c has no output; left out",)
    assert mapped.replayed_reasoning_ids == (aid(1), aid(7))


def test_the_rebuild_is_deterministic() -> None:
    assert sent_input(build(THREE_TURNS, plan(*ALL))) == sent_input(build(THREE_TURNS, plan(*ALL)))


def test_the_body_is_json_serialisable_with_frozen_payloads() -> None:
    body = build(THREE_TURNS, plan(*ALL)).request.body()
    assert json.loads(json.dumps(body)) == body


def test_markers_never_reach_the_model() -> None:
    missing = f"\n\n{marker_line(aid(99))}"
    messages = [dict(m) for m in THREE_TURNS]
    messages[2]["content"] = messages[2]["content"] + missing
    for replay in (plan(*ALL), None, plan()):
        body = json.dumps(build(messages, replay).request.body(), ensure_ascii=False)
        assert "]: #" not in body
        texts = [
            part["text"]
            for item in sent_input(build(messages, replay))
            for part in item.get("content", [])
            if isinstance(part, dict) and "text" in part
        ]
        assert texts and not any(find_markers(text) for text in texts)


def test_without_a_plan_markers_are_removed_and_ids_do_not_change() -> None:
    with_markers = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"{mark(1)}\n\nHello!\n\n{mark(2)}"},
        {"role": "user", "content": "Bye"},
    ]
    without = [with_markers[0], {"role": "assistant", "content": "Hello!"}, with_markers[2]]
    mapped = build(with_markers, None)
    assert sent_input(mapped) == sent_input(build(without, None))
    assert mapped.warnings == () and mapped.replayed_reasoning_ids == ()


def test_text_between_markers_is_joined_when_nothing_is_replayed() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"First.\n\n{mark(1)}\n\nSecond."},
    ]
    [_, assistant] = sent_input(build(messages, None))
    assert assistant["content"][0]["text"] == "First.\n\nSecond."


# --------------------------------------------------------------------------
# Missing, repeated and foreign artifacts
# --------------------------------------------------------------------------


def test_a_missing_artifact_is_warned_about_once_and_skipped() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"{mark(1, 42)}\n\nHello.\n\n{mark(42)}"},
        {"role": "user", "content": "Again"},
    ]
    mapped = build(messages, plan(R1))
    assert sent_input(mapped) == [
        user("Hi"),
        done(R1.payload),
        said(1, "Hello."),
        user("Again"),
    ]
    assert mapped.warnings == (
        f"artifact {aid(42)} not found (deleted, expired or never stored); skipped",
    )


def test_an_artifact_referenced_twice_is_replayed_once() -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"{mark(1)}\n\nHello."},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": f"{mark(1)}\n\nHello again."},
        {"role": "user", "content": "Bye"},
    ]
    items = sent_input(build(messages, plan(R1)))
    assert [i["type"] for i in items].count("reasoning") == 1
    assert items.index(done(R1.payload)) == 1


def test_an_artifact_of_another_chat_is_refused() -> None:
    foreign = art(1, reasoning(1, "secret"), chat="chat-2")
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": f"{mark(1)}\n\nHello."},
        {"role": "user", "content": "Bye"},
    ]
    mapped = build(messages, plan(foreign))
    assert "secret" not in json.dumps(mapped.request.body())
    assert mapped.warnings == (f"artifact {aid(1)} belongs to another chat; not replayed",)
    assert mapped.replayed_reasoning_ids == ()


# --------------------------------------------------------------------------
# Pairing by call_id
# --------------------------------------------------------------------------


def test_pairing_is_by_call_id_not_by_position() -> None:
    think = normalise_item(reasoning(1, "t"))
    assert think is not None
    items = [
        output("call_b", "B"),
        call("call_a"),
        think,
        call("call_b"),
        output("call_a", "A"),
    ]
    warnings: list[str] = []
    assert pair_function_calls(items, warnings) == [
        call("call_a"),
        think,
        call("call_b"),
        output("call_b", "B"),  # stored before its call: moved to just after it
        output("call_a", "A"),
    ]
    assert warnings == []


def test_a_shuffled_store_order_still_pairs() -> None:
    calls = [call(f"call_{n}") for n in range(6)]
    outputs = [output(f"call_{n}", str(n)) for n in range(6)]
    items = calls + outputs
    random.Random(7).shuffle(items)
    warnings: list[str] = []
    paired = pair_function_calls(items, warnings)
    assert warnings == []
    assert sorted(map(json.dumps, paired)) == sorted(map(json.dumps, items))
    for item in paired:  # every output comes after its call
        if item["type"] == "function_call_output":
            assert paired.index(call(item["call_id"])) < paired.index(item)


def test_unpaired_calls_and_outputs_are_left_out_with_their_call_id() -> None:
    warnings: list[str] = []
    kept = pair_function_calls(
        [call("call_x"), output("call_y", "y"), call("call_z"), output("call_z", "z")], warnings
    )
    assert kept == [call("call_z"), output("call_z", "z")]
    assert warnings == [
        "function_call_output call_y has no function_call; left out",
        "function_call call_x has no output; left out",
    ]


def test_pairing_does_not_cross_a_user_message() -> None:
    warnings: list[str] = []
    kept = pair_function_calls([call("call_0"), user("next"), output("call_0", "late")], warnings)
    assert kept == [user("next")]
    assert len(warnings) == 2


def test_a_call_id_reused_in_every_round_pairs_with_the_nearest_call() -> None:
    rounds = [call("call_0", arguments='{"n": 1}'), output("call_0", "one")]
    rounds += [call("call_0", arguments='{"n": 2}'), output("call_0", "two")]
    warnings: list[str] = []
    assert pair_function_calls(rounds, warnings) == rounds
    assert warnings == []


def test_a_lost_output_drops_its_own_call_not_a_later_one() -> None:
    items = [call("call_0", arguments="1"), call("call_0", arguments="2"), output("call_0", "2")]
    warnings: list[str] = []
    assert pair_function_calls(items, warnings) == items[1:]
    assert warnings == ["function_call call_0 has no output; left out"]


# --------------------------------------------------------------------------
# Pruning
# --------------------------------------------------------------------------

LONG = "".join(chr(0x41 + n % 26) for n in range(1000))


def test_an_old_long_output_keeps_its_head_and_tail_around_a_note() -> None:
    item = output("call_a", LONG)
    pruned = prune_tool_output(item, turns_ago=3, retention_turns=2)
    note = "\n…[tool output pruned: removed 616 chars, older than 2 turns]…\n"
    assert pruned["output"] == LONG[:256] + note + LONG[-128:]
    assert item["output"] == LONG  # the input is not changed


@pytest.mark.parametrize(
    ("size", "turns_ago", "retention", "cut"),
    [
        (801, 3, 2, True),
        (800, 3, 2, False),  # not longer than 800
        (801, 2, 2, False),  # within the last 2 turns
        (801, 50, 0, False),  # 0: never pruned
        (5000, 1, 10, False),
    ],
)
def test_only_old_outputs_longer_than_800_are_cut(
    size: int, turns_ago: int, retention: int, cut: bool
) -> None:
    text = "x" * size
    pruned = prune_tool_output(output("c", text), turns_ago=turns_ago, retention_turns=retention)
    if cut:
        removed = size - 384
        assert pruned["output"] == (
            "x" * 256
            + f"\n…[tool output pruned: removed {removed} chars, older than {retention} turns]…\n"
            + "x" * 128
        )
    else:
        assert pruned["output"] == text


def test_only_tool_outputs_are_pruned() -> None:
    item = {**call("call_a"), "arguments": json.dumps({"text": LONG})}
    assert prune_tool_output(item, turns_ago=9, retention_turns=1) is item


def test_build_request_prunes_only_turns_older_than_the_retention() -> None:
    old = art(2, output("call_a", LONG))
    recent = art(4, output("call_b", LONG), message_id="m2")
    messages = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": f"{mark(1, 2)}\n\nFirst."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": f"{mark(3, 4)}\n\nSecond."},
        {"role": "user", "content": "three"},
    ]
    replay = plan(
        art(1, call("call_a")), old, art(3, call("call_b"), message_id="m2"), recent, retention=1
    )
    outputs = [i["output"] for i in sent_input(build(messages, replay)) if "output" in i]
    assert outputs[0] == (
        LONG[:256]
        + "\n…[tool output pruned: removed 616 chars, older than 1 turns]…\n"
        + LONG[-128:]
    )
    assert outputs[1] == LONG


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------


def test_a_call_without_id_and_status_gets_both() -> None:
    stored = {k: v for k, v in call("call_a").items() if k not in {"id", "status"}}
    assert normalise_item(stored, fallback_id="fc_fallback") == {
        **stored,
        "id": "fc_fallback",
        "status": "completed",
    }
    fresh = normalise_item(stored)
    assert fresh is not None and fresh["id"].startswith("fc_")


def test_replayed_ids_are_derived_from_the_artifact_id() -> None:
    bare_reasoning = art(1, {"type": "reasoning", "summary": []})
    bare_call = art(2, {"type": "function_call", "call_id": "c", "name": "n", "arguments": "{}"})
    bare_output = art(3, output("c", "ok"))
    items = replay_items(
        mark(1, 2, 3),
        plan(bare_reasoning, bare_call, bare_output),
        ReplayReport(),
        text_item=simple_text_item,
        turns_ago=1,
    )
    assert [i.get("id") for i in items] == [f"rs_{aid(1)}", f"fc_{aid(2)}", None]


@pytest.mark.parametrize(
    ("stored", "replayed"),
    [
        (None, "completed"),
        ("completed", "completed"),
        ("in_progress", "in_progress"),
        ("incomplete", "incomplete"),
        ("failed", "incomplete"),
        ("cancelled", "incomplete"),
        ("skipped", "completed"),
        ("bogus", "completed"),
        (3, "completed"),
    ],
)
def test_status_is_clamped_to_what_openrouter_accepts(stored: Any, replayed: str) -> None:
    item = normalise_item({**output("call_a", "x"), "status": stored})
    assert item is not None and item["status"] == replayed


@pytest.mark.parametrize(
    ("arguments", "replayed"),
    [
        ({"city": "Oslo", "days": [1, 2]}, '{"city":"Oslo","days":[1,2]}'),
        ({"city": "Zürich"}, '{"city":"Zürich"}'),
        ('{ "city" :  "Oslo" }', '{ "city" :  "Oslo" }'),  # a string is kept as stored
        (None, "{}"),
    ],
)
def test_arguments_become_a_json_string(arguments: Any, replayed: str) -> None:
    item = normalise_item({**call("call_a"), "arguments": arguments})
    assert item is not None and item["arguments"] == replayed


def test_missing_arguments_become_an_empty_object() -> None:
    stored = {k: v for k, v in call("call_a").items() if k != "arguments"}
    item = normalise_item(stored)
    assert item is not None and item["arguments"] == "{}"


@pytest.mark.parametrize(
    ("stored", "replayed"),
    [
        ("plain", "plain"),
        (None, ""),
        (3, "3"),
        ({"temp": 4}, '{"temp":4}'),
        ([{"type": "input_text", "text": "a"}], [{"type": "input_text", "text": "a"}]),
        ([{"type": "text", "text": "a"}], '[{"type":"text","text":"a"}]'),
    ],
)
def test_tool_output_is_a_string_or_content_parts(stored: Any, replayed: Any) -> None:
    item = normalise_item({"type": "function_call_output", "call_id": "c", "output": stored})
    assert item is not None and item["output"] == replayed
    assert "id" not in item  # optional, and an invented one could fail a prefix check


def test_reasoning_keeps_format_signature_and_encrypted_content_byte_for_byte() -> None:
    stored = art(
        1,
        {
            "type": "reasoning",
            "id": "rs_abc",
            "summary": "Short summary.",
            "content": ["step one", {"type": "reasoning_text", "text": "step two"}],
            "encrypted_content": "gAAAAABo\u00e9/+==\n",
            "format": "google-gemini-v1",
            "signature": "Cq0BAdHtim9+/==",
            "status": None,
        },
    )
    item = normalise_item(stored.payload)
    assert item == {
        "type": "reasoning",
        "id": "rs_abc",
        "summary": [{"type": "summary_text", "text": "Short summary."}],
        "content": [
            {"type": "reasoning_text", "text": "step one"},
            {"type": "reasoning_text", "text": "step two"},
        ],
        "encrypted_content": "gAAAAABo\u00e9/+==\n",
        "format": "google-gemini-v1",
        "signature": "Cq0BAdHtim9+/==",
        "status": "completed",
    }
    for key in ("encrypted_content", "format", "signature"):
        assert json.dumps(item[key]).encode() == json.dumps(stored.payload[key]).encode()


def test_reasoning_without_summary_gets_an_empty_list() -> None:
    item = normalise_item({"type": "reasoning", "id": "rs_1", "summary": None})
    assert item == {"type": "reasoning", "id": "rs_1", "summary": [], "status": "completed"}


def test_nulls_are_removed() -> None:
    item = normalise_item({**call("call_a"), "namespace": None})
    assert item is not None and "namespace" not in item


@pytest.mark.parametrize(
    "kind", ["web_search_call", "file_search_call", "image_generation_call", "local_shell_call"]
)
def test_server_side_calls_are_never_replayed(kind: str) -> None:
    warnings: list[str] = []
    assert (
        normalise_item({"type": kind, "id": "x", "status": "completed"}, warnings=warnings) is None
    )
    assert warnings == []


@pytest.mark.parametrize(
    ("stored", "warning"),
    [
        ({"type": "mcp_call", "id": "x"}, "stored item of type 'mcp_call' is not replayed"),
        ({"type": "message", "role": "assistant"}, "stored item of type 'message' is not replayed"),
        ({"id": "x"}, "stored item of type None is not replayed"),
        (
            {"type": "function_call", "name": "n", "arguments": "{}"},
            "stored function_call function_call has no call_id; not replayed",
        ),
        (
            {"type": "function_call", "call_id": "c9", "arguments": "{}"},
            "stored function_call function_call c9 has no name; not replayed",
        ),
        (
            {"type": "function_call_output", "output": "x"},
            "stored function_call_output function_call_output has no call_id; not replayed",
        ),
    ],
)
def test_malformed_or_unknown_items_are_left_out_with_a_warning(
    stored: dict[str, Any], warning: str
) -> None:
    warnings: list[str] = []
    assert normalise_item(stored, warnings=warnings) is None
    assert warnings == [warning]


# --------------------------------------------------------------------------
# Orphans of a cancelled turn
# --------------------------------------------------------------------------


def test_select_orphans_takes_the_previous_messages_unreferenced_artifacts_oldest_first() -> None:
    candidates = [
        art(5, output("call_x", "x"), message_id="m1"),
        art(3, reasoning(3, "referenced"), message_id="m1"),
        art(4, call("call_x"), message_id="m1"),
        art(2, call("call_y"), message_id="sibling"),  # another branch of the chat
    ]
    chosen = select_orphans(candidates, referenced={aid(3)}, previous_message_id="m1")
    assert [a.artifact_id for a in chosen] == [aid(4), aid(5)]


CANCELLED = [
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": f"{mark(1)}\n\nLet me ch"},  # stopped mid-answer
    {"role": "user", "content": "Go on"},
]


def test_orphans_go_right_before_the_newest_user_message() -> None:
    orphans = (art(3, output("call_a", "4 °C")), art(2, call("call_a")), art(4, reasoning(4, "ok")))
    mapped = build(CANCELLED, plan(R1, orphans=orphans))
    assert sent_input(mapped) == [
        user("Weather in Oslo?"),
        done(R1.payload),
        said(1, "Let me ch"),
        done(call("call_a")),  # in id order
        done(output("call_a", "4 °C")),
        done(reasoning(4, "ok")),
        user("Go on"),
    ]
    assert mapped.replayed_reasoning_ids == (aid(1), aid(4))
    assert mapped.warnings == ()


def test_orphans_go_before_the_first_message_of_the_newest_user_turn() -> None:
    messages = [*CANCELLED, {"role": "user", "content": "Hello?"}]
    items = sent_input(build(messages, plan(orphans=(art(2, reasoning(2, "r")),))))
    assert items[-3:] == [done(reasoning(2, "r")), user("Go on"), user("Hello?")]


def test_an_orphan_output_pairs_with_a_referenced_call() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": f"Checking.\n\n{mark(2)}"},
        {"role": "user", "content": "Well?"},
    ]
    replay = plan(CALL_A, orphans=(art(6, output("call_a", "4 °C")),))
    mapped = build(messages, replay)
    assert sent_input(mapped)[1:4] == [
        said(1, "Checking."),
        done(CALL_A.payload),
        done(output("call_a", "4 °C")),
    ]
    assert mapped.warnings == ()


def test_an_unpaired_orphan_call_is_left_out() -> None:
    mapped = build(CANCELLED, plan(R1, orphans=(art(2, call("call_a")),)))
    assert {item["type"] for item in sent_input(mapped)} == {"message", "reasoning"}
    assert mapped.warnings == ("function_call call_a has no output; left out",)


def test_an_orphan_that_is_also_referenced_is_replayed_once() -> None:
    mapped = build(CANCELLED, plan(R1, orphans=(R1,)))
    assert [i["type"] for i in sent_input(mapped)].count("reasoning") == 1


def test_orphan_items_are_in_id_order() -> None:
    orphans = (art(9, reasoning(9, "b")), art(8, reasoning(8, "a")))
    items = orphan_items(plan(orphans=orphans), ReplayReport())
    assert [i["id"] for i in items] == ["rs_8", "rs_9"]


# --------------------------------------------------------------------------
# Models without reasoning
# --------------------------------------------------------------------------


def test_reasoning_is_left_out_for_a_model_that_does_not_reason() -> None:
    mapped = build(THREE_TURNS, plan(*ALL), model=PLAIN)
    items = sent_input(mapped)
    assert "reasoning" not in {item["type"] for item in items}
    assert [i["call_id"] for i in items if i["type"] == "function_call"] == [
        "call_a",
        "call_b",
        "call_d",
    ]
    assert mapped.replayed_reasoning_ids == ()
    assert "2 stored reasoning items (the model takes no reasoning)" in mapped.dropped


# --------------------------------------------------------------------------
# Scanning helpers
# --------------------------------------------------------------------------


def test_turn_indices_start_at_each_user_message_after_a_non_user_one() -> None:
    roles = ["system", "user", "assistant", "user", "user", "assistant", "tool", "user"]
    assert turn_indices([{"role": r} for r in roles]) == [0, 1, 1, 2, 2, 2, 2, 3]
    assert turn_indices(["junk", {"role": "user"}]) == [0, 1]


def test_referenced_ids_come_from_assistant_messages_in_order_without_repeats() -> None:
    messages: list[object] = [
        {"role": "user", "content": mark(9)},  # a user cannot reference artifacts
        {"role": "assistant", "content": f"a\n\n{mark(3, 1)}"},
        {"role": "assistant", "content": [{"type": "text", "text": mark(1, 2)}, "x"]},
        {"role": "assistant", "content": {"type": "output_text", "text": mark(4)}},
        {"role": "assistant", "content": None},
        "junk",
    ]
    assert referenced_ids(messages) == [aid(3), aid(1), aid(2), aid(4)]


def test_split_at_markers_trims_segments_and_skips_blank_ones() -> None:
    text = f"\n  Intro\n\n{mark(1)}\n\n\n{mark(2)}\r\nOutro  \n"
    assert split_at_markers(text) == ["Intro", (aid(1),), (aid(2),), "Outro"]


def test_a_negative_retention_is_refused() -> None:
    with pytest.raises(UsageError, match="tool_output_retention_turns"):
        ReplayPlan(tool_output_retention_turns=-1)


# --------------------------------------------------------------------------
# Property: text survives in order, every present artifact exactly once
# --------------------------------------------------------------------------

PRESENT = {n: art(n, reasoning(n, f"r{n}")) for n in (1, 2, 3)}
TEXT_LINE = st.text(alphabet="abc XYZ.,!?#:-", min_size=0, max_size=12)
PIECE = st.one_of(TEXT_LINE, st.sampled_from([1, 2, 3, 4, 5]))  # 4 and 5 are not stored


@given(st.lists(PIECE, max_size=25))
def test_any_interleaving_keeps_text_in_order_and_each_artifact_once(
    pieces: list[str | int],
) -> None:
    text = "\n".join(marker_line(aid(p)) if isinstance(p, int) else p for p in pieces)
    report = ReplayReport()
    items = replay_items(
        text, plan(*PRESENT.values()), report, text_item=simple_text_item, turns_ago=1
    )

    expected: list[tuple[str, str]] = []
    lines: list[str] = []
    seen: set[int] = set()
    for piece in [*pieces, 0]:  # 0: a sentinel that flushes the last text
        if isinstance(piece, str):
            lines.append(piece)
            continue
        segment = "\n".join(lines).strip()
        lines = []
        if segment:
            expected.append(("text", segment))
        if piece in PRESENT and piece not in seen:
            expected.append(("artifact", f"rs_{piece}"))
        seen.add(piece)

    got = [("text", i["text"]) if "text" in i else ("artifact", i["id"]) for i in items]
    assert got == expected
    assert [i["ordinal"] for i in items if "ordinal" in i] == list(
        range(sum(1 for kind, _ in expected if kind == "text"))
    )
    missing = sorted({p for p in pieces if isinstance(p, int) and p not in PRESENT})
    assert report.warnings == [
        f"artifact {aid(n)} not found (deleted, expired or never stored); skipped"
        for n in dict.fromkeys(p for p in pieces if isinstance(p, int) and p not in PRESENT)
    ]
    assert len(report.warnings) == len(missing)
    assert report.reasoning_ids == [
        aid(n) for n in dict.fromkeys(p for p in pieces if p in PRESENT)
    ]
