"""openwebui.branch_references: the current branch, artifacts placed with no answer text."""

from __future__ import annotations

from typing import Any

from orpipe.adapters.openwebui.branch_references import (
    BranchMessage,
    branch_of,
    with_branch_references,
)
from orpipe.engine.artifacts import find_markers, marker_line

ID1a, ID1b, ID2a, ID9z = ("01" + c * 18 for c in "ABCZ")


def _tree(*edges: tuple[str, str | None, str]) -> dict[str, Any]:
    """(id, parentId, role) → an Open WebUI ``history.messages`` map."""
    return {mid: {"id": mid, "parentId": parent, "role": role} for mid, parent, role in edges}


def test_the_branch_is_the_walk_up_from_the_answer_being_written() -> None:
    tree = _tree(
        ("u1", None, "user"),
        ("a1", "u1", "assistant"),
        ("a1-regenerated", "u1", "assistant"),  # a sibling: not on the branch
        ("u2", "a1-regenerated", "user"),
        ("u2-edited", "a1-regenerated", "user"),
        ("a2", "u2", "assistant"),  # answers the question before its edit
        ("a3", "u2-edited", "assistant"),  # the placeholder being written now
    )
    assert branch_of(tree, "a3") == [
        BranchMessage("u1", "user"),
        BranchMessage("a1-regenerated", "assistant"),
        BranchMessage("u2-edited", "user"),
    ]


def test_an_unknown_message_means_no_branch() -> None:
    assert branch_of(_tree(("u1", None, "user")), "missing") is None
    assert branch_of({}, "a1") is None


def test_a_deleted_parent_starts_the_branch_and_a_cycle_ends_it() -> None:
    tree = _tree(("u2", "gone", "user"), ("a2", "u2", "assistant"))
    assert branch_of(tree, "a2") == [BranchMessage("u2", "user")]
    looped = _tree(("x", "y", "user"), ("y", "x", "assistant"), ("a", "x", "assistant"))
    assert branch_of(looped, "a") == [BranchMessage("y", "assistant"), BranchMessage("x", "user")]


BRANCH = [
    BranchMessage("u1", "user"),
    BranchMessage("a1", "assistant"),
    BranchMessage("u2", "user"),
    BranchMessage("a2", "assistant"),
    BranchMessage("u3", "user"),
]


def _body(*pairs: tuple[str, str]) -> list[object]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_each_answer_gets_its_artifacts_before_its_text_in_creation_order() -> None:
    body = _body(
        ("system", "Be brief."),
        ("user", "q1"),
        ("assistant", "answer 1"),
        ("user", "q2"),
        ("assistant", "answer 2"),
        ("user", "q3"),
    )
    ids = {"a1": [ID1b, ID1a], "a2": [ID2a], "elsewhere": [ID9z]}
    placed = with_branch_references(body, BRANCH, ids)
    assert placed == [
        body[0],
        body[1],
        {"role": "assistant", "content": f"{marker_line(ID1a)}\n{marker_line(ID1b)}"},
        body[2],
        body[3],
        {"role": "assistant", "content": marker_line(ID2a)},
        body[4],
        body[5],
    ]
    assert body[2] == {"role": "assistant", "content": "answer 1"}  # the caller's body untouched


def test_an_answer_stopped_before_its_first_word_still_gets_its_artifacts() -> None:
    # Open WebUI leaves an empty answer out of the body; its reasoning still counts.
    body = _body(("user", "q1"), ("assistant", "answer 1"), ("user", "q2"), ("user", "q3"))
    placed = with_branch_references(body, BRANCH, {"a2": [ID2a]})
    assert placed[2:] == [
        body[2],
        {"role": "assistant", "content": marker_line(ID2a)},
        body[3],
    ]


def test_a_turn_split_by_open_webui_tools_keeps_its_artifacts_before_the_first_message() -> None:
    body = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "assistant", "content": "It is 42."},
        {"role": "user", "content": "q2"},
    ]
    branch = [
        BranchMessage("u1", "user"),
        BranchMessage("a1", "assistant"),
        BranchMessage("u2", "user"),
    ]
    placed = with_branch_references(body, branch, {"a1": [ID1a]})
    assert placed[1] == {"role": "assistant", "content": marker_line(ID1a)}
    assert placed[2:] == body[1:]


def test_compacted_turns_are_skipped_and_newer_ones_still_align() -> None:
    # Context compaction dropped the first exchange; only q2, answer 2, q3 remain.
    body = _body(
        ("system", "[CONVERSATION SUMMARY] ..."),
        ("user", "q2"),
        ("assistant", "answer 2"),
        ("user", "q3"),
    )
    placed = with_branch_references(body, BRANCH, {"a1": [ID1a], "a2": [ID2a]})
    assert [find_markers(str(m["content"])) for m in placed if isinstance(m, dict)] == [
        [],
        [],
        [ID2a],
        [],
        [],
    ]


def test_references_already_in_an_old_answer_are_not_added_twice() -> None:
    old = f"answer 1\n\n{marker_line(ID1a)}"
    body = _body(
        ("user", "q1"),
        ("assistant", old),
        ("user", "q2"),
        ("assistant", "answer 2"),
        ("user", "q3"),
    )
    placed = with_branch_references(body, BRANCH, {"a1": [ID1a, ID1b]})
    assert placed[1] == {"role": "assistant", "content": marker_line(ID1b)}
    assert placed[2] == body[1]


def test_nothing_to_place_leaves_the_messages_as_they_are() -> None:
    body = _body(("user", "q1"), ("assistant", "answer 1"), ("user", "q2"))
    assert with_branch_references(body, BRANCH[:3], {}) == body
