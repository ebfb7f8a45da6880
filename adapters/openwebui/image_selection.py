"""Which images a request sends: the newest user turn's, at most N, else the answer's own.

Images are the heaviest part of a request (base64 in the body) and the
model rarely needs old ones, so, as the original pipe did (seed §E, §A.1):

* only the newest user turn keeps its ``input_image`` parts; images of
  earlier turns are left out (the text of those turns stays);
* at most ``limit`` images (MAX_INPUT_IMAGES_PER_REQUEST) are sent; the
  first ones attached win;
* with ``user_then_assistant`` (IMAGE_INPUT_SELECTION), when the newest user
  turn has no image, the images the last answer showed (Markdown images,
  e.g. generated ones) are attached to it instead, so "make it bluer" works.

``select_images`` works on mapped input items (Responses shapes) and returns
the new list with a sentence for each thing it left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

__all__ = ["ImageSelection", "select_images"]

ImageSelection = Literal["user_turn_only", "user_then_assistant"]

JsonDict = dict[str, Any]

#: ``![alt](url)`` or ``![alt](url "title")`` in an answer's Markdown.
_MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_IMAGE_URL = re.compile(r"^(https://|data:image/)", re.IGNORECASE)


def select_images(
    items: Sequence[JsonDict], *, limit: int, selection: ImageSelection
) -> tuple[list[JsonDict], list[str]]:
    """``items`` with only the images to send, and notes about those left out."""
    newest = _newest_user_turn(items)
    out: list[JsonDict] = []
    older = kept = over = 0
    for position, item in enumerate(items):
        if not _is_user_message(item) or not isinstance(item.get("content"), list):
            out.append(item)
            continue
        parts: list[Any] = []
        for part in item["content"]:
            if not _is_image(part):
                parts.append(part)
            elif position < newest:
                older += 1
            elif kept < limit:
                kept += 1
                parts.append(part)
            else:
                over += 1
        if parts:
            out.append({**item, "content": parts})
    notes: list[str] = []
    if kept == 0 and selection == "user_then_assistant" and newest < len(items):
        out, borrowed = _borrow_answer_images(out, limit)
        if borrowed:
            notes.append(
                f"{_count(borrowed)} from the last answer {_was(borrowed)} attached again."
            )
    if over:
        notes.append(
            f"At most {_count(limit)} can be sent with one message; "
            f"{over} more {_was(over)} left out."
        )
    if older:
        notes.append(f"{_count(older)} from earlier messages {_was(older)} not sent again.")
    return out, notes


def _count(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _was(n: int) -> str:
    return "was" if n == 1 else "were"


def _is_user_message(item: JsonDict) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "input_image"


def _newest_user_turn(items: Sequence[JsonDict]) -> int:
    """Index of the first user message of the newest user turn (len(items) if none)."""
    start = len(items)
    for position in range(len(items) - 1, -1, -1):
        item = items[position]
        if _is_user_message(item):
            start = position
        elif item.get("type", "message") == "message" and start < len(items):
            break  # an earlier assistant/system message: the turn began after it
    return start


def _borrow_answer_images(items: list[JsonDict], limit: int) -> tuple[list[JsonDict], int]:
    """The last answer's Markdown images, added to the last user message."""
    last_user = max((i for i, it in enumerate(items) if _is_user_message(it)), default=None)
    if last_user is None:
        return items, 0
    urls: list[str] = []
    for item in reversed(items[:last_user]):
        if item.get("type") == "message" and item.get("role") == "assistant":
            urls = _answer_image_urls(item)
            break
    urls = urls[:limit]
    if not urls:
        return items, 0
    user = items[last_user]
    content = user.get("content")
    parts = (
        list(content) if isinstance(content, list) else [{"type": "input_text", "text": content}]
    )
    parts += [{"type": "input_image", "image_url": url, "detail": "auto"} for url in urls]
    updated = list(items)
    updated[last_user] = {**user, "content": parts}
    return updated, len(urls)


def _answer_image_urls(item: JsonDict) -> list[str]:
    found: list[str] = []
    for part in item.get("content") or ():
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(text, str):
            found += [u for u in _MARKDOWN_IMAGE.findall(text) if _IMAGE_URL.match(u)]
    return list(dict.fromkeys(found))
