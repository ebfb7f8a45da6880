"""A chat's stored artifacts, seen from the Open WebUI pipe: what to store, what to replay.

asyncio-flavoured: every call here runs on Open WebUI's loop and reaches
the artifact store through the bridge (``EngineBridge.call_store``), inside
the trio run that owns it.

* ``artifact_context`` says where a turn's artifacts belong (chat and
  message), or None when they are not stored: plain API calls (no chat id),
  temporary chats (``local:…``), and pipes without a store.
* ``read_branch`` reads the conversation's current branch from Open WebUI's
  own chat store (``adapters.openwebui.branch_references``). When Open WebUI keeps
  the chat, answers carry no reference text at all: ``load_replay_plan``
  loads the artifacts of the branch's earlier answers by message id, and
  places them in the request's messages in memory only.
* Otherwise (an API client's own chat and message ids), ``load_replay_plan``
  loads what the history's reference lines name, plus the artifacts of a
  *cancelled* previous turn. A cancelled answer never got its reference
  lines (the stream stopped before its end), so its artifacts are found
  another way: artifacts of this chat that no reference names and that are
  newer than every referenced one belong to turns after the last answer
  that finished with references; the newest such message's artifacts are
  the interrupted previous turn's, and ``artifact_replay`` places them just
  before the newest user message. Chats written before answers stopped
  carrying references keep replaying the same way.
* ``forget_replayed`` deletes replayed reasoning after a successful reply
  when the retention is ``next_reply``.

A store failure never fails the chat: the turn goes on without history
artifacts and the user is told once that history storage is degraded.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from orpipe.adapters.bridge import EngineBridge
from orpipe.adapters.openwebui.artifact_replay import ReplayPlan, referenced_ids, select_orphans
from orpipe.adapters.openwebui.branch_references import (
    BranchMessage,
    branch_of,
    with_branch_references,
)
from orpipe.engine.artifacts import Artifact, ArtifactContext
from orpipe.engine.errors import EngineError
from orpipe.engine.ports import ArtifactStore

__all__ = [
    "DEGRADED_NOTICE",
    "Loaded",
    "artifact_context",
    "forget_replayed",
    "load_replay_plan",
    "read_branch",
]

log = logging.getLogger("orpipe.owui")
_T = TypeVar("_T")

#: The longest a turn waits for the persister before loading history.
_SETTLE_S = 2.0

DEGRADED_NOTICE = (
    "History storage is degraded: earlier reasoning and tool results could not be loaded "
    "for this answer. The administrator can check the artifact database and Redis."
)


def artifact_context(
    metadata: Mapping[str, Any],
    *,
    user_id: str | None,
    model_id: str | None,
    reasoning: str,
    tool_results: bool,
) -> ArtifactContext | None:
    """Where this turn's artifacts go; None when the turn has no saved chat to belong to."""
    chat_id = metadata.get("chat_id")
    message_id = metadata.get("message_id")
    if not isinstance(chat_id, str) or not chat_id or chat_id.startswith("local:"):
        return None
    if not isinstance(message_id, str) or not message_id:
        return None
    return ArtifactContext(
        chat_id=chat_id,
        message_id=message_id,
        model_id=model_id,
        user_id=user_id,
        reasoning=reasoning,
        tool_results=tool_results,
    )


@dataclass(frozen=True, slots=True)
class Loaded:
    """What ``load_replay_plan`` found; ``degraded`` when the store failed."""

    plan: ReplayPlan | None
    degraded: bool = False
    #: The persister cannot write right now (it holds artifacts and retries).
    writes_failing: bool = False
    #: The request's messages with the branch's artifacts placed (in memory only);
    #: None: use the body's messages as they are.
    messages: tuple[object, ...] | None = None


async def read_branch(chat_id: str, message_id: str) -> list[BranchMessage] | None:
    """The current branch before ``message_id``, from Open WebUI's chat store.

    None outside Open WebUI, when it does not keep this chat or message, or
    when its store cannot be read (logged): answers then carry reference
    lines as before, which replay just as well.
    """
    if "open_webui" not in sys.modules:
        return None  # importing it elsewhere would start an Open WebUI
    try:
        chats = importlib.import_module("open_webui.models.chats").Chats
        messages_map = await chats.get_messages_map_by_chat_id(chat_id)
    except Exception as exc:  # Open WebUI's own store: any failure means "cannot tell"
        log.warning("chat %s could not be read from Open WebUI (%s)", chat_id, type(exc).__name__)
        return None
    if not isinstance(messages_map, Mapping):
        return None
    return branch_of(messages_map, message_id)


async def load_replay_plan(
    bridge: EngineBridge,
    messages: Sequence[object],
    context: ArtifactContext,
    *,
    retention_turns: int,
    branch: Sequence[BranchMessage] | None = None,
) -> Loaded:
    """The artifacts to replay: the branch's (``branch`` given) or what the text references."""
    chat_id = context.chat_id
    if branch is not None and not _answered(branch) and not referenced_ids(messages):
        # The branch's first answer: nothing of this chat can be stored for it to
        # replay, so neither the persister nor the store is asked. Under load the
        # persister is always busy with other chats' artifacts, and waiting for it
        # was most of a first answer's delay.
        return Loaded(
            plan=ReplayPlan(tool_output_retention_turns=retention_turns, chat_id=chat_id),
            messages=tuple(with_branch_references(messages, branch, {})),
        )
    if branch is not None:
        return await _load_branch(
            bridge, messages, context, branch, retention_turns=retention_turns
        )
    referenced = referenced_ids(messages)

    async def load(store: ArtifactStore) -> tuple[dict[str, Artifact], list[Artifact]]:
        found = await store.fetch(chat_id, referenced) if referenced else {}
        newest = max(referenced, default="")
        # Ids are time-ordered: newer than every reference = after the last
        # answer that finished with its references.
        later = [i for i in await store.list_ids(chat_id) if i > newest and i not in found]
        candidates = await store.fetch(chat_id, later) if later else {}
        return found, [a for a in candidates.values() if a.message_id != context.message_id]

    fetched = await _after_barrier(bridge, chat_id, load)
    if isinstance(fetched, Loaded):
        return fetched
    (found, candidates), writes_failing = fetched
    orphans: tuple[Artifact, ...] = ()
    if candidates:
        previous = max(candidates, key=lambda a: a.artifact_id).message_id
        orphans = select_orphans(candidates, referenced=referenced, previous_message_id=previous)
    return Loaded(
        plan=ReplayPlan(
            artifacts=found,
            orphans=orphans,
            tool_output_retention_turns=retention_turns,
            chat_id=chat_id,
        ),
        writes_failing=writes_failing,
    )


def _answered(branch: Sequence[BranchMessage]) -> bool:
    return any(message.role == "assistant" for message in branch)


async def _load_branch(
    bridge: EngineBridge,
    messages: Sequence[object],
    context: ArtifactContext,
    branch: Sequence[BranchMessage],
    *,
    retention_turns: int,
) -> Loaded:
    """The artifacts of the branch's earlier answers, by message id, plus any the text names."""
    chat_id = context.chat_id
    answers = [m.message_id for m in branch if m.role == "assistant"]
    referenced = referenced_ids(messages)  # chats written while answers carried references

    async def load(store: ArtifactStore) -> dict[str, Artifact]:
        ids = await store.list_ids(chat_id, message_ids=answers) if answers else []
        wanted = list(dict.fromkeys([*ids, *referenced]))
        return await store.fetch(chat_id, wanted) if wanted else {}

    fetched = await _after_barrier(bridge, chat_id, load)
    if isinstance(fetched, Loaded):
        return fetched
    found, writes_failing = fetched
    on_branch = set(answers)
    by_message: dict[str, list[str]] = {}
    for artifact in found.values():
        if artifact.message_id in on_branch:
            by_message.setdefault(artifact.message_id, []).append(artifact.artifact_id)
    placed = with_branch_references(messages, branch, by_message)
    return Loaded(
        plan=ReplayPlan(
            artifacts=found, tool_output_retention_turns=retention_turns, chat_id=chat_id
        ),
        writes_failing=writes_failing,
        messages=tuple(placed),
    )


async def _after_barrier(
    bridge: EngineBridge, chat_id: str, load: Callable[[ArtifactStore], Awaitable[_T]]
) -> tuple[_T, bool] | Loaded:
    """The persister's barrier, then ``load`` next to the store, in one crossing into
    trio: (its result, whether the persister's writes are failing), or the ``Loaded``
    to answer with when there is nothing to replay (the store failed: degraded; this
    pipe stores no artifacts).

    Why the barrier, although an answer's ending already waits for its own artifacts
    (engine.durable_wait, on every worker): that wait is bounded and skipped for a
    cancelled answer, so this worker's artifacts may still be on their way to the
    store; a quick next message landing here still finds them. It waits (at most
    ``_SETTLE_S``) only for what was sent to the persister before this call, and
    not at all while its store is failing (it then holds its backlog and retries).
    """
    try:
        result, writes_failing = await bridge.call_store_when_persisted(load, _SETTLE_S)
    except EngineError as exc:
        log.warning("artifacts of chat %s could not be loaded: %s", chat_id, exc.message)
        return Loaded(plan=None, degraded=True, writes_failing=False)
    if result is None:  # this pipe stores no artifacts
        return Loaded(plan=None)
    return result, writes_failing


async def forget_replayed(bridge: EngineBridge, chat_id: str, artifact_ids: Sequence[str]) -> None:
    """Delete reasoning that was replayed (retention ``next_reply``); failures are logged."""
    if not artifact_ids:
        return
    ids = list(artifact_ids)

    async def delete(store: ArtifactStore) -> int:
        return await store.delete(chat_id, ids)

    try:
        await bridge.call_store(delete)
    except EngineError as exc:
        log.warning("replayed reasoning of chat %s not deleted: %s", chat_id, exc.message)
