"""The Responses stream event types that end a response, named once.

The decoder, the response mapper and the fetcher's end-of-stream check each
ask "does this event end the answer?" in their own way (decode it leanly, map
it to an ending, stop reading); they all ask it of these sets.
"""

from __future__ import annotations

__all__ = ["DOCUMENTED_TERMINAL_TYPES", "ENDS_RESPONSE", "ERROR_TYPES", "TERMINAL_TYPES"]

#: The documented terminal events: each carries the whole response object.
DOCUMENTED_TERMINAL_TYPES = frozenset(
    {"response.completed", "response.incomplete", "response.failed"}
)
#: With ``response.done``, a docs-only spelling that counts as completed.
TERMINAL_TYPES = DOCUMENTED_TERMINAL_TYPES | {"response.done"}
#: In-band errors: typed, and the untyped ``{"error": …}`` line the decoder names ``error``.
ERROR_TYPES = frozenset({"error", "response.error"})
#: Whatever ends the answer, terminal or error.
ENDS_RESPONSE = TERMINAL_TYPES | ERROR_TYPES
