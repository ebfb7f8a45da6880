"""The text of a message's content: parts flattened, Open WebUI's rendered blocks removed.

Pure helpers shared by the history mapping (``request.messages``) and the
pass-through tool results (``request.passthrough_tools``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from orpipe.adapters.openwebui.request.tally import RequestMappingError

__all__ = ["flatten_text", "part_text", "strip_rendered_blocks"]

#: Text part types, whichever API shape the history was written in.
_TEXT_PART_TYPES: Final = frozenset({"text", "input_text", "output_text"})
#: ``<details type=…>`` blocks Open WebUI renders into stored assistant text. They are
#: UI (the model's thinking, tool-call cards, code runs), not the answer the model gave.
_RENDERED_DETAIL_TYPES: Final = frozenset({"reasoning", "tool_calls", "code_interpreter"})
_DETAILS_TAG = re.compile(r"<(/?)details\b([^>]*)>", re.IGNORECASE)
_TYPE_ATTRIBUTE = re.compile(r"""\btype\s*=\s*["']?([\w-]+)""", re.IGNORECASE)


def flatten_text(content: Any, where: str) -> str:
    """Text of a system, developer or assistant message: a string, text parts or one dict."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return part_text(content) or ""
    if isinstance(content, list | tuple):
        texts = (part if isinstance(part, str) else part_text(part) for part in content)
        return "\n".join(text for text in texts if text)
    raise RequestMappingError(
        f"{where} has content of type {type(content).__name__}",
        "Message content must be text or a list of content parts.",
    )


def part_text(part: Any) -> str | None:
    """A text part's text; None for anything else."""
    # Non-text parts (an image in a system prompt, say) carry no text to keep.
    if not isinstance(part, Mapping):
        return None
    if part.get("type", "text") not in _TEXT_PART_TYPES:
        return None
    text = part.get("text")
    return text if isinstance(text, str) else None


def strip_rendered_blocks(text: str) -> str:
    """``text`` without Open WebUI's rendered reasoning, tool-call and code-run blocks.

    Open WebUI 0.12.4 rebuilds history from stored output items, which carry
    no such blocks, but chats stored by older versions (and temporary chats of
    some clients) keep ``<details type="reasoning" …>…</details>`` inside the
    assistant text. Nested ``<details>`` are matched by depth rather than with a
    lazy regex, so a block holding another block (or code with ``` fences) is
    removed whole; an unclosed block runs to the end, as a browser renders it.
    Other ``<details>`` (ones the model wrote as part of its answer) stay.
    """
    if "<details" not in text.lower():
        return text  # the common case: nothing to scan
    kept: list[str] = []
    resume = 0  # where the text after the last removed block starts
    depth = 0  # > 0 while inside a block being removed
    for tag in _DETAILS_TAG.finditer(text):
        closing = tag.group(1) == "/"
        if depth:
            depth += -1 if closing else 1
            if not depth:
                resume = tag.end()
        elif not closing and _rendered_type(tag.group(2)):
            kept.append(text[resume : tag.start()])
            depth = 1
    if not depth:
        kept.append(text[resume:])
    return "".join(kept)


def _rendered_type(attributes: str) -> bool:
    found = _TYPE_ATTRIBUTE.search(attributes)
    return found is not None and found.group(1).lower() in _RENDERED_DETAIL_TYPES
