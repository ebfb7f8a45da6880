"""Which stored artifacts belong to the conversation's current branch, with no text in the answers.

Open WebUI 0.12.4 keeps every chat's messages as a tree (``history.messages``:
each message names its ``parentId``); the Function is told the id of the
assistant message it is writing (``__metadata__["message_id"]``), which Open
WebUI has already put in that tree. Walking ``parentId`` up from it gives the
conversation as the user sees it now: an edited question starts a new branch,
a regenerated answer is a sibling, a deleted message is gone; none of those
is on the walk. The persister stores each artifact under the chat and the
message that produced it, so the artifacts of the branch's earlier answers
are exactly the ones to replay, and the answers need to carry no reference
text a user could see, copy or break.

This module is pure: ``branch_of`` walks a messages map that the caller
read from Open WebUI, and ``with_branch_references`` places the found
artifacts into the request's messages as reference lines that exist only in
memory (``engine.artifacts.marker_line``), so the replay that reads older
chats' visible references (``adapters.openwebui.artifact_replay``) places both kinds
alike.

Placement: the body Open WebUI hands a pipe has no message ids (its
``process_messages_with_output`` drops them), and old turns may have been
compacted away, so earlier answers are matched from the newest end: an
answer followed by *u* user messages in the branch belongs to the span that
is followed by *u* user messages in the body. Its artifacts go in a message
of their own just before that span's first assistant message (reasoning and
tool calls come before the text they led to), or just before the next user
message when the span has no assistant text left (an answer stopped before
its first word).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orpipe.engine.artifacts import find_markers, marker_line

__all__ = ["BranchMessage", "branch_of", "with_branch_references"]

#: A chat deeper than this is not walked further (a cycle is caught anyway).
_MAX_DEPTH = 100_000


@dataclass(frozen=True, slots=True)
class BranchMessage:
    message_id: str
    role: str


def branch_of(messages_map: Mapping[str, Any], message_id: str) -> list[BranchMessage] | None:
    """The messages before ``message_id`` on its branch, oldest first; None if it is not there.

    None means Open WebUI does not know this message (an API client's own
    ids, a chat it does not keep): the caller then relies on reference lines.
    """
    current = messages_map.get(message_id)
    if not isinstance(current, Mapping):
        return None
    branch: list[BranchMessage] = []
    seen = {message_id}
    parent = current.get("parentId")
    while isinstance(parent, str) and parent not in seen and len(seen) < _MAX_DEPTH:
        seen.add(parent)
        message = messages_map.get(parent)
        if not isinstance(message, Mapping):
            break  # a parent that was deleted: the branch starts here
        role = message.get("role")
        branch.append(BranchMessage(parent, role if isinstance(role, str) else ""))
        parent = message.get("parentId")
    branch.reverse()
    return branch


def _users_after(roles: Sequence[str]) -> list[int]:
    """For each position, how many user messages come after it."""
    counts: list[int] = []
    seen = 0
    for role in reversed(roles):
        counts.append(seen)
        if role == "user":
            seen += 1
    counts.reverse()
    return counts


def with_branch_references(
    messages: Sequence[object],
    branch: Sequence[BranchMessage],
    artifact_ids: Mapping[str, Iterable[str]],
) -> list[object]:
    """``messages`` with the branch's artifacts placed before the answers that made them.

    ``artifact_ids`` maps an assistant message id to its artifacts' ids; ids
    are time-ordered, so sorting them restores the order they were made in.
    An id already referenced in the body (a chat written before this
    change, whose answers carry visible reference lines) is not added again.
    """
    roles = [m.get("role") if isinstance(m, Mapping) else None for m in messages]
    body_after = _users_after([r if isinstance(r, str) else "" for r in roles])
    user_positions = [i for i, role in enumerate(roles) if role == "user"]
    already = {
        found
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "assistant"
        for found in find_markers(m["content"] if isinstance(m.get("content"), str) else "")
    }
    #: users after an answer → its ids; and whether a question came before it
    wanted: dict[int, list[str]] = {}
    asked: dict[int, bool] = {}
    branch_after = _users_after([m.role for m in branch])
    for index, (message, after) in enumerate(zip(branch, branch_after, strict=True)):
        if message.role != "assistant" or after == 0:
            continue
        ids = [i for i in artifact_ids.get(message.message_id, ()) if i not in already]
        if ids:
            wanted.setdefault(after, []).extend(ids)
            asked[after] = any(m.role == "user" for m in branch[:index])
    inserts: dict[int, list[str]] = {}
    for after, ids in wanted.items():
        if after > len(user_positions) or (after == len(user_positions) and asked[after]):
            continue  # that exchange was compacted away: its question is not in the body
        next_user = user_positions[-after]
        start = user_positions[-after - 1] + 1 if after < len(user_positions) else 0
        first_answer = next(
            (
                i
                for i in range(start, next_user)
                if roles[i] == "assistant" and body_after[i] == after
            ),
            next_user,
        )
        inserts.setdefault(first_answer, []).extend(sorted(ids))
    if not inserts:
        return list(messages)
    out: list[object] = []
    for index, original in enumerate(messages):
        if index in inserts:
            lines = "\n".join(marker_line(i) for i in inserts[index])
            out.append({"role": "assistant", "content": lines})
        out.append(original)
    return out
