"""Inline attachments: data URLs and raw base64, checked for size before they are decoded.

A client can paste megabytes of base64 into one message. ``decoded_size``
works out, from the text alone, how many bytes it would decode to (exactly,
padding included), so ``decode_base64`` can refuse an oversized attachment
*before* allocating its bytes. ``parse_data_url`` reads
``data:<media type>[;params];base64,<payload>`` (media type lower-cased,
``image/jpg`` read as ``image/jpeg``) and checks the payload the same way.

Every problem is an ``AttachmentError`` that says which attachment and what
to do; one bad attachment never fails the others.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from orpipe.adapters.openwebui.refusal import Refusal

__all__ = [
    "AttachmentError",
    "DataUrl",
    "check_base64",
    "check_data_url",
    "decode_base64",
    "decoded_size",
    "parse_data_url",
    "readable_size",
]

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_ALIASES = {"image/jpg": "image/jpeg", "audio/mp3": "audio/mpeg", "audio/x-wav": "audio/wav"}
_BASE64_CHARS = re.compile(rb"^[A-Za-z0-9+/]*={0,2}$")
_URLSAFE_TABLE = bytes.maketrans(b"-_", b"+/")


class AttachmentError(Refusal, ValueError):
    """An attachment that cannot be used; ``reason`` is for the person who sent it."""


@dataclass(frozen=True, slots=True)
class DataUrl:
    media_type: str
    data: bytes


def decoded_size(text: str) -> int:
    """Bytes ``text`` decodes to as base64 (whitespace ignored), without decoding it."""
    length = sum(1 for ch in text if not ch.isspace())
    stripped = text.rstrip()
    padding = len(stripped) - len(stripped.rstrip("="))
    return max(0, length * 3 // 4 - min(padding, 2))


def check_base64(text: str, *, limit_bytes: int, what: str = "the attachment") -> bytes:
    """``text`` compacted and checked (size, alphabet), without decoding it.

    Cheap enough for the event loop: a length count and one regex pass in C.
    """
    size = decoded_size(text)
    if size > limit_bytes:
        shown, limit = readable_size(size), readable_size(limit_bytes)
        if shown == limit:  # just over: rounded, both would read the same
            shown, limit = f"{size:,} bytes", f"{limit_bytes:,}-byte"
        raise AttachmentError(f"{what} is {shown}, over the {limit} limit; send a smaller file")
    compact = "".join(text.split()).encode("ascii", errors="replace")
    compact = compact.translate(_URLSAFE_TABLE)
    if not _BASE64_CHARS.match(compact) or len(compact) % 4 == 1:
        raise AttachmentError(f"{what} is not valid base64; attach it again")
    return compact + b"=" * (-len(compact) % 4)  # clients often drop the padding


def readable_size(n: int) -> str:
    """Bytes for a person: "45.2 MB", "50 MB", "3 KB"."""
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.1f}".removesuffix(".0") + " MB"
    return f"{-(-n // 1024)} KB"


def decode_base64(text: str, *, limit_bytes: int, what: str = "the attachment") -> bytes:
    """Strictly decoded base64 (standard or URL-safe alphabet), refused above ``limit_bytes``."""
    compact = check_base64(text, limit_bytes=limit_bytes, what=what)
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error:
        raise AttachmentError(f"{what} is not valid base64; attach it again") from None


def parse_data_url(url: str, *, limit_bytes: int, what: str = "the attachment") -> DataUrl:
    """A ``data:`` URL's media type and bytes; ``AttachmentError`` when malformed or too big."""
    media_type, payload = _split(url, what)
    return DataUrl(media_type, decode_base64(payload, limit_bytes=limit_bytes, what=what))


def check_data_url(url: str, *, limit_bytes: int, what: str = "the attachment") -> tuple[str, str]:
    """A ``data:`` URL's media type and base64 payload, checked but not decoded."""
    media_type, payload = _split(url, what)
    check_base64(payload, limit_bytes=limit_bytes, what=what)
    return media_type, payload


def _split(url: str, what: str) -> tuple[str, str]:
    if not url[:5].lower() == "data:":
        raise AttachmentError(f"{what} is not a data: URL")
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise AttachmentError(f"{what} is a data: URL without data (no comma); attach it again")
    fields = [f.strip() for f in header.split(";")]
    media_type = (fields[0] or "text/plain").lower()
    media_type = _ALIASES.get(media_type, media_type)
    if not _MEDIA_TYPE.match(media_type):
        raise AttachmentError(f"{what} has an unreadable media type; attach it again")
    if "base64" not in {f.lower() for f in fields[1:]}:
        raise AttachmentError(
            f"{what} is a data: URL that is not base64-encoded; attach the file itself"
        )
    return media_type, payload
