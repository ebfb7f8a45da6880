"""Replay of stored artifacts: earlier turns' reasoning and tool items, back into ``input``.

OpenRouter keeps no state between requests (contract §4.1), so every turn must
send again the reasoning items, ``function_call`` items and their
``function_call_output`` items that earlier turns produced. The persister
stores them as artifacts; the answer text carries one invisible marker line
per artifact (``engine.artifacts.marker_line``). This module turns history
text plus the artifacts the caller loaded back into Responses input items.

It is pure and synchronous: no I/O, no clock (except ``normalise_item``'s new
id when called without a fallback, which the replay path never does). The
caller finds the ids (``referenced_ids``), fetches the artifacts, and passes
them in a ``ReplayPlan``; the request mapping (``adapters.openwebui.request.messages``)
places them.

Ordering rules
--------------
* **Markers in place.** An assistant text is split at its marker lines; each
  text segment (trimmed, non-blank) becomes an assistant ``output_text``
  message and each marker is replaced, where it stands, by its artifact. The
  writer of the answer therefore decides the order: a marker written where its
  item occurred in the stream replays reasoning and tool calls *before* the
  text they led to (the original appended every marker at the end, so its
  replay put text before its tool items: seed §K.2.23). Markers never reach
  the model as text, also when nothing is replayed.
* **Each artifact at most once** per request, at its first reference.
* **Pairing by ``call_id``** (seed §K.2.16 fixed: the original paired by list
  index). Within one turn (the span between two user messages), a
  ``function_call_output`` pairs with the nearest earlier unpaired
  ``function_call`` with the same ``call_id``; an output stored before its
  call is moved to just after the call. A call without an output, or an output
  without a call, is left out with a warning naming the ``call_id``: the API
  rejects either one alone. Scoping by turn lets providers that reuse call
  ids (``call_0`` every turn) replay correctly.
* **Orphans** (a cancelled turn): the answer text Open WebUI kept after a stop
  holds the markers written before the stop, but not those of items that
  finished after it, which the persister still stored (the flush guarantee).
  The caller passes those unreferenced artifacts of the *previous* assistant
  message as ``ReplayPlan.orphans`` (``select_orphans`` picks them). They are
  normalised, filtered and paired like the rest, in id (= creation) order, and
  placed immediately before the newest user turn: that is just after the
  interrupted answer they belong to, so the model sees the reasoning and tool
  results it produced before the stop. Only the previous message's orphans
  are taken: artifacts of a sibling branch (a regenerated or edited message)
  are not in this history, and an older cancelled turn's orphans would land at
  the wrong place.
* **Pruning.** A ``function_call_output`` whose string output is longer than
  800 characters and whose turn is more than ``tool_output_retention_turns``
  turns ago (0 = never prune) keeps its first 256 and last 128 characters
  around a note saying how much was removed. Turns: a new turn starts at each
  user message that follows a non-user message; other messages belong to the
  current turn; the newest turn is 0 turns ago, the answer before it 1.
* **Reasoning** items are replayed only for models that take reasoning
  (``keep_reasoning``). Whether OpenRouter accepts them for other models is
  not documented, and one rejected item would fail every later turn of the
  chat, so they are left out and counted instead.

Normalisation (``normalise_item``) makes stored items valid input items
(contract §1.3, §4.7-4.8): only ``reasoning``, ``function_call`` and
``function_call_output`` are replayed (server-side calls such as
``web_search_call`` are never replayed; any other type is left out with a
warning, since an unknown input item would fail the request), ``status`` is
one of ``in_progress``/``completed``/``incomplete``, top-level nulls are
removed, and ``format``, ``signature`` and ``encrypted_content`` are passed on
unchanged.
"""

from __future__ import annotations

import json
import types
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from orpipe.engine.artifacts import Artifact, find_markers, new_artifact_id
from orpipe.engine.errors import UsageError
from orpipe.engine.messages import thaw_json

__all__ = [
    "PRUNE_HEAD_CHARS",
    "PRUNE_TAIL_CHARS",
    "PRUNE_THRESHOLD_CHARS",
    "ReplayPlan",
    "ReplayReport",
    "TextItem",
    "normalise_item",
    "orphan_items",
    "pair_function_calls",
    "prune_tool_output",
    "referenced_ids",
    "replay_items",
    "select_orphans",
    "split_at_markers",
    "turn_indices",
]

JsonDict = dict[str, Any]
#: Builds the assistant message for one text segment: (text, ordinal in its message).
TextItem = Callable[[str, int], JsonDict]

PRUNE_THRESHOLD_CHARS: Final = 800
PRUNE_HEAD_CHARS: Final = 256
PRUNE_TAIL_CHARS: Final = 128

#: Statuses OpenRouter accepts on input items (contract §1.3, §4.8).
_STATUSES: Final = frozenset({"in_progress", "completed", "incomplete"})
#: The engine's own tool statuses meaning "did not finish"; other unknown ones → completed.
_UNFINISHED: Final = frozenset({"failed", "cancelled", "canceled"})
#: Server-side calls: their effect is already in the answer, and replaying them fails.
_NEVER_REPLAYED: Final = frozenset(
    {"web_search_call", "file_search_call", "image_generation_call", "local_shell_call"}
)
#: Id prefixes OpenAI validates on replayed items (an ``fc`` id on function_call, say).
_ID_PREFIXES: Final = {"reasoning": "rs", "function_call": "fc"}
#: ``function_call_output.output`` may be a list of these parts instead of a string.
_OUTPUT_PART_TYPES: Final = frozenset({"input_text", "input_image", "input_file"})


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayPlan:
    """What the caller loaded for one request, and how long tool outputs stay whole."""

    #: Marker-referenced artifacts by id (missing ones are warned about and skipped).
    artifacts: Mapping[str, Artifact] = field(default_factory=lambda: types.MappingProxyType({}))
    #: Unreferenced artifacts of the previous assistant message (see ``select_orphans``).
    orphans: tuple[Artifact, ...] = ()
    #: Tool outputs of the last N turns are replayed whole; 0: never pruned.
    tool_output_retention_turns: int = 10
    #: When set, artifacts of any other chat are refused: a marker is user-editable
    #: text, so a pasted marker must not pull another chat's items into this one.
    chat_id: str | None = None

    def __post_init__(self) -> None:
        if self.tool_output_retention_turns < 0:
            raise UsageError(
                "tool_output_retention_turns must be 0 or more, "
                f"not {self.tool_output_retention_turns}"
            )
        object.__setattr__(self, "orphans", tuple(self.orphans))


@dataclass(slots=True)
class ReplayReport:
    """What one request's replay did; shared by every call for that request."""

    #: For the operator's log (artifact and call ids), not for the person chatting.
    warnings: list[str] = field(default_factory=list)
    #: Ids of the reasoning artifacts replayed (deleted after a good reply under next_reply).
    reasoning_ids: list[str] = field(default_factory=list)
    #: Reasoning artifacts left out because the model takes no reasoning.
    reasoning_dropped: int = 0
    #: Artifacts already placed, so a repeated marker does not replay an item twice.
    placed: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------
# History scanning
# --------------------------------------------------------------------------


def turn_indices(messages: Sequence[object]) -> list[int]:
    """The turn of each message: a new turn starts at a user message after a non-user one.

    Messages before the first user message are turn 0. Lenient: a malformed
    entry counts as a non-user message (``build_request`` reports it).
    """
    turns: list[int] = []
    turn, previous = 0, None
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "user" and previous != "user":
            turn += 1
        turns.append(turn)
        previous = role
    return turns


def referenced_ids(messages: Sequence[object]) -> list[str]:
    """Artifact ids the assistant messages reference, in order, without repeats."""
    ids: dict[str, None] = {}
    for message in messages:
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            ids.update(dict.fromkeys(find_markers(_plain_text(message.get("content")))))
    return list(ids)


def _plain_text(content: Any) -> str:
    # Lenient on purpose: this runs before build_request validates the body.
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if isinstance(content, list | tuple):
        texts = (p.get("text") if isinstance(p, Mapping) else p for p in content)
        return "\n".join(t for t in texts if isinstance(t, str))
    return ""


def split_at_markers(text: str) -> list[str | tuple[str]]:
    """``text`` as trimmed, non-blank text segments (str) and marker ids (1-tuples), in order."""
    pieces: list[str | tuple[str]] = []
    lines: list[str] = []
    for line in text.split("\n"):
        marker = find_markers(line)  # the engine's own definition of a marker line
        if not marker:
            lines.append(line)
            continue
        _flush_text(lines, pieces)
        pieces.append((marker[0],))
    _flush_text(lines, pieces)
    return pieces


def _flush_text(lines: list[str], pieces: list[str | tuple[str]]) -> None:
    segment = "\n".join(lines).strip()
    if segment:
        pieces.append(segment)
    lines.clear()


def select_orphans(
    candidates: Iterable[Artifact], *, referenced: Collection[str], previous_message_id: str
) -> tuple[Artifact, ...]:
    """The previous assistant message's artifacts that no marker references, oldest first."""
    return tuple(
        sorted(
            (
                a
                for a in candidates
                if a.message_id == previous_message_id and a.artifact_id not in referenced
            ),
            key=lambda a: a.artifact_id,  # ids sort by creation time
        )
    )


# --------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------


def replay_items(
    text: str,
    plan: ReplayPlan,
    report: ReplayReport,
    *,
    text_item: TextItem,
    turns_ago: int,
    keep_reasoning: bool = True,
) -> list[JsonDict]:
    """One assistant message's text with every marker replaced by its artifact, in place.

    Items are normalised and pruned but not yet paired: pairing spans the whole
    turn (``pair_function_calls`` over the finished input).
    """
    items: list[JsonDict] = []
    ordinal = 0
    for piece in split_at_markers(text):
        if isinstance(piece, str):
            items.append(text_item(piece, ordinal))
            ordinal += 1
            continue
        artifact_id = piece[0]
        artifact = plan.artifacts.get(artifact_id)
        if artifact is None:
            if artifact_id not in report.placed:  # warn once per id, not per reference
                report.placed.add(artifact_id)
                report.warnings.append(
                    f"artifact {artifact_id} not found (deleted, expired or never stored); skipped"
                )
            continue
        item = _artifact_item(artifact, plan, report, turns_ago, keep_reasoning)
        if item is not None:
            items.append(item)
    return items


def orphan_items(
    plan: ReplayPlan, report: ReplayReport, *, turns_ago: int = 1, keep_reasoning: bool = True
) -> list[JsonDict]:
    """The plan's orphans as input items, in id order (placement: see the module docstring)."""
    items = []
    for artifact in sorted(plan.orphans, key=lambda a: a.artifact_id):
        item = _artifact_item(artifact, plan, report, turns_ago, keep_reasoning)
        if item is not None:
            items.append(item)
    return items


def _artifact_item(
    artifact: Artifact,
    plan: ReplayPlan,
    report: ReplayReport,
    turns_ago: int,
    keep_reasoning: bool,
) -> JsonDict | None:
    if artifact.artifact_id in report.placed:
        return None  # referenced again (or also passed as an orphan): replay once
    report.placed.add(artifact.artifact_id)
    if plan.chat_id is not None and artifact.chat_id != plan.chat_id:
        report.warnings.append(
            f"artifact {artifact.artifact_id} belongs to another chat; not replayed"
        )
        return None
    payload = dict(artifact.payload)
    if not isinstance(payload.get("type"), str):
        payload["type"] = artifact.item_type
    item = normalise_item(
        payload, fallback_id=_fallback_id(payload["type"], artifact), warnings=report.warnings
    )
    if item is None:
        return None
    if item["type"] == "reasoning":
        if not keep_reasoning:
            report.reasoning_dropped += 1
            return None
        report.reasoning_ids.append(artifact.artifact_id)
    return prune_tool_output(
        item, turns_ago=turns_ago, retention_turns=plan.tool_output_retention_turns
    )


def _fallback_id(item_type: Any, artifact: Artifact) -> str:
    # Derived from the artifact id, not fresh: the same history must give the same
    # input every turn, or provider prompt caches miss.
    return f"{_ID_PREFIXES.get(str(item_type), 'item')}_{artifact.artifact_id}"


# --------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------


def normalise_item(
    item: Mapping[str, Any], *, fallback_id: str | None = None, warnings: list[str] | None = None
) -> JsonDict | None:
    """A stored output item as a valid input item, or None when it must not be replayed.

    Types never replayed (server-side calls) give None silently; malformed
    items and unknown types give None with a warning. ``id`` is kept, else
    ``fallback_id``, else a new id (except on ``function_call_output``, where
    it is optional and an invented id could fail OpenAI's prefix check).
    """
    notes = warnings if warnings is not None else []
    thawed = thaw_json(item)
    if not isinstance(thawed, dict):
        notes.append(f"stored item is a {type(item).__name__}, not an object; not replayed")
        return None
    # OpenRouter rejects explicit nulls for optional fields (contract §1.2).
    out: JsonDict = {str(k): v for k, v in thawed.items() if v is not None}
    kind = out.get("type")
    shaper = _SHAPERS.get(kind) if isinstance(kind, str) else None
    if shaper is None:
        if kind not in _NEVER_REPLAYED:
            notes.append(f"stored item of type {kind!r} is not replayed")
        return None
    problem = shaper(out)
    if problem is not None:
        notes.append(f"stored {kind} {problem}; not replayed")
        return None
    out["status"] = _status(out.get("status"))
    if not isinstance(out.get("id"), str) or not out["id"]:
        out.pop("id", None)
        if kind != "function_call_output":
            out["id"] = fallback_id or f"{_ID_PREFIXES[str(kind)]}_{new_artifact_id()}"
    return out


def _status(status: Any) -> str:
    if status in _STATUSES:
        return str(status)
    return "incomplete" if status in _UNFINISHED else "completed"


def _shape_function_call(item: JsonDict) -> str | None:
    if not _nonempty_str(item.get("call_id")):
        return "function_call has no call_id"
    if not _nonempty_str(item.get("name")):
        return f"function_call {item['call_id']} has no name"
    arguments = item.get("arguments", "{}")
    # The API takes arguments as a JSON string; a stored string is kept byte for byte.
    item["arguments"] = arguments if isinstance(arguments, str) else _json(arguments)
    return None


def _shape_function_call_output(item: JsonDict) -> str | None:
    if not _nonempty_str(item.get("call_id")):
        return "function_call_output has no call_id"
    output = item.get("output", "")
    if not (isinstance(output, str) or _content_parts(output)):
        item["output"] = _json(output)
    else:
        item["output"] = output
    return None


def _shape_reasoning(item: JsonDict) -> str | None:
    # format, signature and encrypted_content are left exactly as stored.
    item["summary"] = _parts(item.get("summary"), "summary_text")
    if "content" in item:
        item["content"] = _parts(item["content"], "reasoning_text")
    return None


_SHAPERS: Final[dict[str, Callable[[JsonDict], str | None]]] = {
    "function_call": _shape_function_call,
    "function_call_output": _shape_function_call_output,
    "reasoning": _shape_reasoning,
}


def _parts(value: Any, part_type: str) -> list[Any]:
    """Reasoning summary/content as a list of parts; bare strings become ``part_type`` parts."""
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    return [
        {"type": part_type, "text": v} if isinstance(v, str) else v
        for v in values
        if isinstance(v, str | dict)
    ]


def _content_parts(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(part, dict) and part.get("type") in _OUTPUT_PART_TYPES for part in value
    )


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------
# Pairing and pruning
# --------------------------------------------------------------------------


def pair_function_calls(items: Sequence[JsonDict], warnings: list[str]) -> list[JsonDict]:
    """``items`` with every call and output that has no partner (by ``call_id``) left out.

    Pairing is scoped to one turn: it starts afresh at every user message.
    """
    kept: list[JsonDict] = []
    span: list[JsonDict] = []
    for item in items:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            kept.extend(_pair_span(span, warnings))
            kept.append(item)
            span = []
        else:
            span.append(item)
    kept.extend(_pair_span(span, warnings))
    return kept


def _pair_span(span: Sequence[JsonDict], warnings: list[str]) -> list[JsonDict]:
    placed: list[JsonDict] = []
    waiting: dict[str, list[int]] = {}  # call_id → positions of calls without output yet
    early: dict[str, deque[JsonDict]] = {}  # outputs stored before their call
    paired: set[int] = set()
    for item in span:
        kind, call_id = item.get("type"), item.get("call_id")
        if kind not in {"function_call", "function_call_output"}:
            placed.append(item)
        elif not isinstance(call_id, str):
            warnings.append(f"{kind} without call_id left out")
        elif kind == "function_call":
            placed.append(item)
            if early.get(call_id):
                paired.add(len(placed) - 1)
                placed.append(early[call_id].popleft())  # the output right after its call
            else:
                waiting.setdefault(call_id, []).append(len(placed) - 1)
        elif waiting.get(call_id):
            paired.add(waiting[call_id].pop())  # the nearest earlier call with this id
            placed.append(item)
        else:
            early.setdefault(call_id, deque()).append(item)
    for call_id, outputs in early.items():
        warnings.extend(
            f"function_call_output {call_id} has no function_call; left out" for _ in outputs
        )
    result = []
    for position, item in enumerate(placed):
        if item.get("type") == "function_call" and position not in paired:
            warnings.append(f"function_call {item['call_id']} has no output; left out")
        else:
            result.append(item)
    return result


def prune_tool_output(item: JsonDict, *, turns_ago: int, retention_turns: int) -> JsonDict:
    """``item`` with a long tool output of an old turn cut to its head and tail.

    Cut when ``retention_turns`` > 0, ``turns_ago`` > ``retention_turns`` and the
    (string) output is longer than 800 characters: the first 256 and last 128
    characters stay around a note. Other items come back unchanged.
    """
    output = item.get("output")
    if (
        item.get("type") != "function_call_output"
        or not isinstance(output, str)
        or retention_turns <= 0
        or turns_ago <= retention_turns
        or len(output) <= PRUNE_THRESHOLD_CHARS
    ):
        return item
    removed = len(output) - PRUNE_HEAD_CHARS - PRUNE_TAIL_CHARS
    note = (
        f"\n…[tool output pruned: removed {removed} chars, older than {retention_turns} turns]…\n"
    )
    cut = output[:PRUNE_HEAD_CHARS] + note + output[-PRUNE_TAIL_CHARS:]
    return {**item, "output": cut}
