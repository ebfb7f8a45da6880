"""What a finished tool call becomes: its output text, its item, its status line. Synchronous.

``CallOutcome`` records how one call ended. From it come:

* ``output_item``: the ``function_call_output`` the model reads next turn.
  Its ``status`` is one OpenRouter accepts (``completed``/``incomplete``;
  it rejects the original's ``failed``/``skipped``/``cancelled``); what
  went wrong is in the output text, which is also what gets stored.
* ``status_line``: the line a user sees ("get_weather finished in 0.8 s",
  "get_weather failed: timed out after 60 s").

``output_text`` turns whatever a tool returned into text: strings as they
are, JSON-able values as JSON, anything else by ``str``; longer than the
limit, the head is kept with a note saying how much was cut, so a runaway
tool cannot blow up the next request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

__all__ = ["CallOutcome", "Verdict", "output_text"]

Verdict = Literal["completed", "failed", "timed_out", "skipped", "refused", "cancelled"]

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOutcome:
    """How one call ended: the verdict, the text for the model, how long it ran."""

    call_id: str
    name: str
    verdict: Verdict
    #: For ``completed`` the tool's output; otherwise the reason, for the model.
    text: str
    elapsed_s: float | None = None

    def output_item(self) -> dict[str, Any]:
        """The ``function_call_output`` input item for the next turn."""
        return {
            "type": "function_call_output",
            "call_id": self.call_id,
            "output": self.text if self.verdict == "completed" else f"Error: {self.text}",
            "status": "completed" if self.verdict == "completed" else "incomplete",
        }

    def status_line(self) -> str:
        """The user's line for this call's end."""
        if self.verdict == "completed":
            return f"{self.name} finished in {_seconds(self.elapsed_s)}"
        if self.verdict == "skipped":
            return f"{self.name} skipped: {self.text}"
        return f"{self.name} failed: {self.text}"


def _seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    if value < 0.1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def output_text(value: object, limit: int) -> str:
    """What a tool returned, as text for the model, at most about ``limit`` characters."""
    if isinstance(value, str):
        text = value
    elif value is None:
        text = ""
    elif isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace")
    else:
        try:
            text = _encode(value).decode()
        except (TypeError, msgspec.EncodeError, OverflowError, RecursionError):
            text = str(value)
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n…[output cut: the first {limit:,} of {len(text):,} characters are kept]"
    )
