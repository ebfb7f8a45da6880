"""``Refusal``: why an attachment, a link or a stored file cannot be used.

The base of the exceptions the intake pass turns into notes for the person
chatting: each carries ``reason``, a sentence written for them; the subclass
says which step refused (the SSRF guard, the downloader, the file store, the
data URL parser).
"""

from __future__ import annotations

__all__ = ["Refusal"]


class Refusal(Exception):
    """Something the person asked for cannot be used; ``reason`` tells them why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
