"""The Responses stream event types more than one actor asks about, named once.

The decoder, the response mapper and the fetcher's end-of-stream check each
ask "does this event end the answer?" in their own way (decode it leanly, map
it to an ending, stop reading); they all ask it of these sets. The decoder and
the mapper also agree on which ``.done`` events only repeat text (``REPEATS_TEXT``).
"""

from __future__ import annotations

__all__ = [
    "DOCUMENTED_TERMINAL_TYPES",
    "ENDS_RESPONSE",
    "ERROR_TYPES",
    "REPEATS_TEXT",
    "TERMINAL_TYPES",
]

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

#: ``.done`` twins that repeat a whole part's text (the deltas already carried it). The
#: mapper ignores them, so the decoder need not decode a large one: a long answer's
#: twins are as long as the answer, and the end of a 100,000-token answer does not
#: cost a copy of it per twin.
REPEATS_TEXT = frozenset(
    {
        "response.content_part.done",
        "response.output_text.done",
        "response.refusal.done",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.done",
        "response.reasoning_text.done",
    }
)
