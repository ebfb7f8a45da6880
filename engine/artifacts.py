"""Artifacts: the output items the next turn must send back, and their ids.

A reasoning model's reasoning items and every tool call with its output are
not part of the visible answer, but OpenRouter is stateless: the next turn
must replay them. The persister stores them; the answer text carries one
invisible reference per artifact (a Markdown reference-style link
definition line, ``[<id>]: #``), and the next request finds them again.

Ids are 20 characters of Crockford base32: 10 for the millisecond clock and
10 for a counter that starts at a random value each millisecond and only
goes up, so ids sort by creation time and never repeat within a process
(and collide across processes only with 2^-50 odds per millisecond).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from orpipe.engine.json_values import JsonObject, freeze_json

__all__ = [
    "ARTIFACT_ID_LENGTH",
    "Artifact",
    "ArtifactContext",
    "find_markers",
    "ids_of",
    "marker_line",
    "new_artifact_id",
    "strip_markers",
]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ARTIFACT_ID_LENGTH = 20
_HALF = 10
_HALF_BITS = 5 * _HALF
_HALF_MAX = (1 << _HALF_BITS) - 1

_MARKER = re.compile(r"^\[([0-9A-HJKMNP-TV-Z]{20})\]: #\s*$", re.MULTILINE)


class _IdClock:
    """The last (millisecond, counter) handed out; ids only go up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ids are made on the trio thread and in worker threads
        self._ms = -1
        self._counter = 0

    def next(self, now_ms: int | None) -> str:
        with self._lock:
            ms = int(time.time() * 1000) if now_ms is None else now_ms
            if ms > self._ms:
                self._ms, self._counter = ms, secrets.randbits(_HALF_BITS - 2)
            elif self._counter < _HALF_MAX:
                self._counter += 1  # same millisecond (or the clock stepped back): count up
            else:  # 2^50 ids in one millisecond: borrow the next one
                self._ms, self._counter = self._ms + 1, 0
            return _encode(self._ms & _HALF_MAX) + _encode(self._counter)


_CLOCK = _IdClock()


def _encode(value: int) -> str:
    chars = []
    for _ in range(_HALF):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_artifact_id(*, now_ms: int | None = None) -> str:
    """A new time-ordered id; strictly increasing within this process."""
    return _CLOCK.next(now_ms)


def marker_line(artifact_id: str) -> str:
    """The invisible reference written into the answer text for one artifact."""
    return f"[{artifact_id}]: #"


def find_markers(text: str) -> list[str]:
    """Artifact ids referenced in ``text``, in order of appearance, without repeats."""
    return list(dict.fromkeys(_MARKER.findall(text)))


def strip_markers(text: str) -> str:
    """``text`` without its reference lines (the model must not see them)."""
    return _MARKER.sub("", text).rstrip()


#: Output items that are never artifacts: the visible answer lives in Open WebUI's
#: own history, and a generated image is megabytes of base64 that is never
#: replayed (the answer shows it; seed §K.2.21).
_NEVER_STORED = frozenset({"message", "image_generation_call"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactContext:
    """Where a request's artifacts belong (set by the adapter; None = not persisted).

    ``reasoning`` is the retention of reasoning items: ``disabled`` (never
    stored), ``next_reply`` (deleted after the next successful reply) or
    ``conversation`` (kept until the age cleanup). ``tool_results``: store
    function calls, their outputs and other non-message items.
    """

    chat_id: str
    message_id: str
    model_id: str | None = None
    user_id: str | None = None
    reasoning: str = "next_reply"
    tool_results: bool = True
    #: Store function calls and their outputs. Off when someone else keeps
    #: them as history (Open WebUI running the tools itself, pass-through).
    function_calls: bool = True

    def wants(self, item_type: str) -> bool:
        """Whether an output item of this type is stored for this request."""
        if item_type in _NEVER_STORED:
            return False
        if item_type == "reasoning":
            return self.reasoning != "disabled"
        if item_type in ("function_call", "function_call_output"):
            return self.tool_results and self.function_calls
        return self.tool_results

    def artifact_for(self, item: JsonObject) -> Artifact | None:
        """A new artifact holding ``item``, or None when items of its type are not stored."""
        item_type = str(item.get("type", ""))
        if not self.wants(item_type):
            return None
        return Artifact(
            chat_id=self.chat_id,
            message_id=self.message_id,
            model_id=self.model_id,
            user_id=self.user_id,
            item_type=item_type,
            payload=item,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """One stored output item, with where it belongs."""

    artifact_id: str = field(default_factory=new_artifact_id)
    chat_id: str
    message_id: str
    item_type: str
    payload: JsonObject
    model_id: str | None = None
    user_id: str | None = None
    #: Unix seconds.
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        object.__setattr__(self, "payload", freeze_json(self.payload))

    def __repr__(self) -> str:  # payloads may hold reasoning text: keep them out of logs
        return (
            f"Artifact(id={self.artifact_id}, type={self.item_type}, chat={self.chat_id}, "
            f"message={self.message_id})"
        )


def ids_of(artifacts: Iterable[Artifact]) -> Iterator[str]:
    return (a.artifact_id for a in artifacts)
