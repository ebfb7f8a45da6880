"""What one mapping skipped along the way, and the one error a body that cannot be mapped raises.

``Tally`` is the mapping's bookkeeping: each part of the body that is left
out is counted or named here as it happens, and ``skip_notes`` words it once
at the end for the person chatting. Pure, like the rest of ``request``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.data_urls import AttachmentError, check_data_url
from orpipe.engine.errors import EngineError

__all__ = [
    "JsonDict",
    "RequestMappingError",
    "Tally",
    "expect_mapping",
    "set_present",
    "skip_notes",
]

JsonDict = dict[str, Any]


class RequestMappingError(EngineError):
    """Open WebUI's body cannot be turned into a Responses request.

    A malformed body is the caller's input, not an engine bug, so this is an
    ``EngineError`` whose message the pipe can show the person as it is.
    """

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        super().__init__(f"This chat request cannot be sent: {problem}. {fix}")


def expect_mapping(
    value: object, where: str, fix: str, *, noun: str = "an object"
) -> Mapping[str, Any]:
    """``value`` as a mapping, or the error saying what ``where`` is instead of ``noun``."""
    if not isinstance(value, Mapping):
        raise RequestMappingError(f"{where} is a {type(value).__name__}, not {noun}", fix)
    return value


@dataclass(slots=True)
class Tally:
    """What the mapping skipped along the way, to report once at the end."""

    #: Parts skipped because the model lacks the capability: "image" | "file" | "audio".
    skipped: Counter[str] = field(default_factory=Counter)
    #: Part types no Responses input shape exists for (e.g. "refusal").
    unsupported: Counter[str] = field(default_factory=Counter)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Tool calls Open WebUI ran itself (TOOL_EXECUTION_MODE open-webui) are history.
    keep_tool_calls: bool = False
    #: BASE64_MAX_SIZE_MB: inline attachments larger than this are left out.
    base64_max_bytes: int = 50 * 1024 * 1024
    #: VIDEO_MAX_SIZE_MB: inline videos larger than this are left out.
    video_max_bytes: int = 100 * 1024 * 1024
    #: How many inline attachments were looked at (to name them in notes).
    attachments: int = 0
    #: For the operator's log: history parts left out because they are malformed or unpaired.
    warnings: list[str] = field(default_factory=list)
    #: Open WebUI's tool name → the name announced upstream, for renamed tools.
    history_names: dict[str, str] = field(default_factory=dict)
    #: ``function_call`` item ids given so far: each must be unique in one input.
    call_item_ids: set[str] = field(default_factory=set)

    def refused(self, error: AttachmentError) -> None:
        """One attachment left out: the user reads why; the rest of the request goes on."""
        self.notes.append(error.reason[:1].upper() + error.reason[1:] + ".")

    def inline_ok(self, url: str, kind: str, limit_bytes: int) -> bool:
        """A link passes; inline data must be a readable data URL within ``limit_bytes``
        (checked from its length, never decoded here). A refusal becomes a note."""
        if url[:5].lower() != "data:":
            return True
        try:
            check_data_url(url, limit_bytes=limit_bytes, what=self.inline_name(kind))
        except AttachmentError as exc:
            self.refused(exc)
            return False
        return True

    def inline_name(self, kind: str) -> str:
        self.attachments += 1
        return f"attachment {self.attachments} ({kind})"


#: kind → (what the model does not accept, singular noun, plural noun)
_SKIP_WORDING: Final = {
    "image": ("images", "image", "images"),
    "file": ("files", "file", "files"),
    "audio": ("audio", "audio clip", "audio clips"),
    "video": ("video", "video", "videos"),
}


def skip_notes(model: ModelInfo, tally: Tally) -> list[str]:
    """The notes for the person chatting: what was skipped and why, then the tally's own."""
    who = model.name or "This model"
    notes = []
    for kind, (accepted, singular, plural) in _SKIP_WORDING.items():
        count = tally.skipped[kind]
        if count:
            noun = singular if count == 1 else plural
            notes.append(f"{who} does not accept {accepted}; {count} {noun} skipped.")
    count = sum(tally.unsupported.values())
    if count:
        kinds = ", ".join(sorted(tally.unsupported))
        noun = "attachment" if count == 1 else "attachments"
        notes.append(f"{count} {noun} of an unsupported kind ({kinds}) skipped.")
    return notes + tally.notes


def set_present(options: JsonDict, key: str, value: Any) -> None:
    # OpenRouter rejects explicit nulls for optional fields (contract §1.2).
    if value is not None:
        options[key] = value
