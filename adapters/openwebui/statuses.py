"""One request's status lines, kept the way Open WebUI lists them.

This module owns ``StatusHistory`` -- the rules both the answer renderer and
the safe emitter apply to every status they send -- the fixed lines
(``WAITING``, ``STOPPED``), the past-tense line that closes an open status
(``closed_text``) and how a duration is written (``format_seconds``). Why the
rules are needed (Open WebUI appends every status and shows only the last):
docs/open-webui-notes.md, "Sources and statuses on the socket".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["STOPPED", "WAITING", "StatusHistory", "closed_text", "format_seconds"]

#: The status line from submission until OpenRouter's first event is shown.
WAITING = "Waiting for OpenRouter…"

#: What closes a status that was still open when the answer stopped being read.
STOPPED = "Stopped"

#: Past-tense lines for statuses closed with their own description (Open WebUI's
#: own middleware closes "Creating image" with "Image created").
_CLOSED = {
    "Searching the web…": "Searched the web",
    "Preparing attachments…": "Attachments prepared",
    WAITING: "OpenRouter responded",
}


def format_seconds(seconds: float) -> str:
    """A duration as the status lines show it: ``5.99 s``."""
    return f"{max(0.0, seconds):.2f} s"


def closed_text(description: str) -> str:
    """The line that closes the open status ``description`` without repeating it."""
    known = _CLOSED.get(description)
    if known is not None:
        return known
    return f"{description.removesuffix('…').rstrip()}: done"


class StatusHistory:
    """One request's status entries as Open WebUI keeps them.

    ``entry(data)`` is what to send for a status, or None when nothing may be:

    * no description text, or ``hidden``: None -- Open WebUI would list it as
      a dot without text;
    * ``done`` (not exactly ``false``) with the description of a status this
      history opened: that status's closing line (``closed_text``) instead of
      the same text again;
    * a text already in the history: numbered, ``"Calling x (2)…"``, so no
      line is listed twice.

    Other keys (``action``, ``queries``, …) are kept. ``open`` is the status
    line when it still shimmers (the last entry, ``done`` exactly false): only
    the last entry's ``done`` matters to the browser, so an earlier open
    status needs no closing of its own once a later one is sent.
    """

    def __init__(self) -> None:
        self._texts: set[str] = set()
        self._opened: set[str] = set()
        self._open: str | None = None

    @property
    def open(self) -> str | None:
        """The description of the last entry when it is still open, else None."""
        return self._open

    def entry(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        description = data.get("description")
        if not isinstance(description, str) or not description.strip() or data.get("hidden"):
            return None
        opening = data.get("done") is False
        text = description
        if opening:
            self._opened.add(description)
        elif description in self._opened:
            self._opened.discard(description)
            text = closed_text(description)
        text = self._unique(text)
        self._texts.add(text)
        self._open = text if opening else None
        return {**data, "description": text}

    def _unique(self, text: str) -> str:
        if text not in self._texts:
            return text
        stem, dots = (text[:-1].rstrip(), "…") if text.endswith("…") else (text, "")
        n = 2
        while f"{stem} ({n}){dots}" in self._texts:
            n += 1
        return f"{stem} ({n}){dots}"
