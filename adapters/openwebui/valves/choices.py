"""The values valves take: the choice types, "inherit" and the streaming presets.

Both forms (``admin_form``, ``user_form``) and the mappings read these.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple

__all__ = [
    "INHERIT",
    "STREAMING_PRESETS",
    "ImageSelection",
    "Inherit",
    "LogLevel",
    "ReasoningEffort",
    "Retention",
    "StreamingLimits",
    "StreamingProfile",
    "SummaryMode",
    "ToolMode",
    "clamp_idle_flush",
]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
SummaryMode = Literal["auto", "concise", "detailed", "disabled"]
Retention = Literal["disabled", "next_reply", "conversation"]
StreamingProfile = Literal["quick", "normal", "slow"]
ToolMode = Literal["engine", "open-webui"]
ImageSelection = Literal["user_turn_only", "user_then_assistant"]

Inherit = Literal["inherit"]
INHERIT: Inherit = "inherit"


class StreamingLimits(NamedTuple):
    """How text deltas are batched: flush at this many characters, or after this much quiet."""

    char_limit: int
    idle_flush_ms: int


#: The original's presets (inventory §A.1).
STREAMING_PRESETS: Mapping[str, StreamingLimits] = MappingProxyType(
    {
        "quick": StreamingLimits(10, 100),
        "normal": StreamingLimits(20, 250),
        "slow": StreamingLimits(80, 600),
    }
)


def clamp_idle_flush(ms: int) -> int:
    """As the original: 0 switches the timer off; anything else stays between
    50 ms (a timer per few characters costs more than it saves) and 2 s."""
    return 0 if ms <= 0 else min(max(ms, 50), 2000)
