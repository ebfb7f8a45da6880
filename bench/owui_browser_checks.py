"""The browser step's verdicts: from what was seen on the page (and in the mock's log) to a Check.

Owns the pure half of ``bench.owui_browser``: each function takes what the
browser gathered (samples of the page, clipboard writes, toasts, status
entries, the requests the mock received) and says what is wrong with it, with
the evidence. No I/O, so every check is unit-tested without a browser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "COPY_TOAST",
    "BrowserChat",
    "Check",
    "answer_problem",
    "copy_problem",
    "error_text",
    "find_chat_request",
    "last_user_text",
    "normalize_ws",
    "replay_problem",
    "short",
    "status_history_problems",
    "stored_status_entries",
    "thinking_indicators",
    "unexpected_toasts",
]

#: The toast Open WebUI raises when its Copy button worked (caused by the check itself).
COPY_TOAST: Final = "Copying to clipboard was successful!"


@dataclass(frozen=True)
class Check:
    """One verdict: ``what`` says what was checked and what was seen."""

    ok: bool
    what: str


@dataclass(frozen=True)
class BrowserChat:
    """One chat to run: a label (file names, messages), the model id, how many turns."""

    label: str
    model: str
    turns: int
    reasoning: bool = False


def normalize_ws(text: str) -> str:
    """Runs of whitespace as one space, no leading or trailing whitespace."""
    return " ".join(text.split())


def short(text: str, limit: int = 80) -> str:
    """``repr`` of ``text`` cut to about ``limit`` characters (middle elided)."""
    if len(text) <= limit:
        return repr(text)
    half = limit // 2
    return repr(text[:half]) + f"…({len(text) - 2 * half} chars)…" + repr(text[-half:])


def copy_problem(copied: Sequence[str], visible: str) -> str | None:
    """None when exactly one text was copied and it equals the visible answer (whitespace
    runs compared as one space, as the browser lays text out); else what differs."""
    if not copied:
        return "the Copy click put nothing on the clipboard"
    if len(copied) > 1:
        return f"the Copy click copied {len(copied)} times: {[short(c, 40) for c in copied]}"
    got, want = normalize_ws(copied[0]), normalize_ws(visible)
    if not want:
        return f"the answer shows no text, yet {short(copied[0])} was copied"
    if got == want:
        return None
    common = 0
    for a, b in zip(got, want, strict=False):
        if a != b:
            break
        common += 1
    if got.startswith(want):
        return (
            f"the copy has {len(got) - len(want)} characters more than the visible answer, "
            f"at its end: {short(got[common:], 120)}"
        )
    if want.startswith(got):
        return f"the copy lacks the visible answer's end: {short(want[common:], 120)}"
    return (
        f"copy and visible answer differ after {common} characters: the copy continues "
        f"{short(got[common:], 60)}, the page shows {short(want[common:], 60)}"
    )


_THINKING = re.compile(r"think", re.IGNORECASE)


def thinking_indicators(sample: Mapping[str, Any]) -> list[str]:
    """The thinking indicators in one sample of an answer: each reasoning block, and the
    status line when it says Thinking."""
    found = [f"reasoning block {text!r}" for text in sample.get("reasoning") or []]
    status = sample.get("status")
    if isinstance(status, str) and _THINKING.search(status):
        found.append(f"status line {status!r}")
    return found


def status_history_problems(entries: Sequence[str]) -> list[str]:
    """Blank entries (by position, 1-based) and entries shown more than once."""
    problems = [
        f"entry {i} of {len(entries)} is blank" for i, e in enumerate(entries, 1) if not e.strip()
    ]
    counts: dict[str, int] = {}
    for entry in entries:
        key = normalize_ws(entry)
        if key:
            counts[key] = counts.get(key, 0) + 1
    problems += [f"{text!r} appears {n} times" for text, n in counts.items() if n > 1]
    return problems


def stored_status_entries(history: object) -> list[str] | None:
    """The descriptions of a stored ``statusHistory``'s entries that are not hidden (None
    when there is no list to read)."""
    if not isinstance(history, list):
        return None
    return [
        str(entry.get("description") or "")
        for entry in history
        if isinstance(entry, Mapping) and entry.get("hidden") is not True
    ]


def unexpected_toasts(toasts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every toast except the Copy button's own, as ``type: text``."""
    out = []
    for toast in toasts:
        text = normalize_ws(str(toast.get("text") or ""))
        if text == COPY_TOAST:
            continue
        out.append(f"{toast.get('type') or 'toast'}: {text or '(no text)'}")
    return out


def last_user_text(record: Mapping[str, Any]) -> str | None:
    """The text of the last user message a request to the mock carried."""
    users = [
        item
        for item in record.get("input") or []
        if item.get("role") == "user" and item.get("type", "message") == "message"
    ]
    return str(users[-1].get("text") or "") if users else None


def find_chat_request(log: Sequence[Mapping[str, Any]], message: str) -> Mapping[str, Any] | None:
    """The newest request whose last user message is ``message`` (title and follow-up
    tasks quote the chat inside a longer prompt, so they do not match)."""
    want = normalize_ws(message)
    for record in list(log)[::-1]:
        text = last_user_text(record)
        if text is not None and normalize_ws(text) == want:
            return record
    return None


def replay_problem(log: Sequence[Mapping[str, Any]], first: str, second: str) -> tuple[bool, str]:
    """Whether the request for ``second`` replayed the reasoning the mock sent in answer
    to ``first`` (same item id, or the same encrypted content), with what was seen."""
    turn1 = find_chat_request(log, first)
    turn2 = find_chat_request(log, second)
    if turn1 is None or turn2 is None:
        missing = "first" if turn1 is None else "second"
        seen = [last_user_text(r) for r in log[-6:]]
        return False, f"no request to the mock for the {missing} turn; last user texts: {seen}"
    sent = [o["id"] for o in turn1.get("output") or [] if o.get("type") == "reasoning"]
    if not sent:
        return False, f"the mock sent no reasoning item in turn 1 ({turn1.get('scenario')})"
    items = turn2.get("input") or []
    replayed = [i for i in items if i.get("type") == "reasoning"]
    kinds = [str(i.get("type")) + (f"/{i['role']}" if i.get("role") else "") for i in items]
    for rs_id in sent:
        for item in replayed:
            encrypted = str(item.get("encrypted_content") or "")
            if item.get("id") == rs_id or encrypted.startswith(f"gAAAAmock-{rs_id}-"):
                return True, (
                    f"turn 2's request replayed turn 1's reasoning item {rs_id} "
                    f"(encrypted_content {encrypted[:40]!r}; input items {kinds})"
                )
    got = [(i.get("id"), str(i.get("encrypted_content") or "")[:40]) for i in replayed]
    return False, (
        f"turn 2's request did not replay turn 1's reasoning {sent}: its reasoning items "
        f"{got or 'none'}; its input items {kinds}"
    )


def error_text(error: object) -> str:
    """An Open WebUI message ``error`` as the text it shows ("" for none)."""
    if not error:
        return ""
    if isinstance(error, Mapping):
        for key in ("content", "message", "detail"):
            if isinstance(error.get(key), str):
                return str(error[key])
        inner = error.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        return json.dumps(error)
    return str(error) if error is not True else "error (legacy: the text is the content)"


def answer_problem(visible: str, stored: Mapping[str, Any]) -> str | None:
    """None when the answer shows text and Open WebUI stored no error for it."""
    if stored.get("problem"):
        return f"could not read the stored message: {stored['problem']}"
    error = error_text(stored.get("error"))
    if error:
        return f"Open WebUI shows an error instead of an answer: {error!r}"
    if not normalize_ws(visible):
        return f"the answer shows no text (stored content {short(str(stored.get('content')))})"
    return None
