"""The user form: ``UserValves``, one user's overrides of the system settings.

Every field defaults to "inherit" (any case), so a saved user form never
overrides a system setting the user did not choose (the original's merge bug,
inventory §A.2). ``effective.effective_settings`` applies it to the system valves.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from orpipe.adapters.openwebui.valves.choices import (
    INHERIT,
    Inherit,
    LogLevel,
    ReasoningEffort,
    Retention,
    StreamingProfile,
    SummaryMode,
)
from orpipe.adapters.openwebui.valves.fields import ANY_CASE, inherits, lower, upper

__all__ = ["OnOff", "UserValves"]

OnOff = Literal["inherit", "on", "off"]
_TRUE_WORDS = frozenset({"on", "true", "yes", "1"})
_FALSE_WORDS = frozenset({"off", "false", "no", "0"})


def _inherit_or_whole_number(low: int, high: int) -> BeforeValidator:
    """Reads a number valve that may also say "inherit".

    The type is ``Literal["inherit"] | int``: the 0.12.4 form draws it as a
    text box (no top-level type or enum) and submits the text, so "40" and
    " Inherit " are accepted as well as 40; one clear message covers every
    bad value instead of pydantic's one error per union branch.
    """
    problem = f"must be 'inherit' or a whole number from {low} to {high}"

    def check(value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.lower() == INHERIT:
                return INHERIT
            if not text.isdigit():
                raise ValueError(problem)
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(problem)
        return value

    return BeforeValidator(check)


def _on_off_word(value: object) -> object:
    # Booleans (and their words) are what the original stored for these fields.
    if isinstance(value, bool):
        return "on" if value else "off"
    word = lower(value)
    if word in _TRUE_WORDS:
        return "on"
    if word in _FALSE_WORDS:
        return "off"
    return word


def _level_or_inherit(value: object) -> object:
    upper_case = upper(value)
    return INHERIT if upper_case == "INHERIT" else upper_case


_ON_OFF = BeforeValidator(_on_off_word)
_LEVEL_OR_INHERIT = BeforeValidator(_level_or_inherit)
_CHAR_LIMIT = _inherit_or_whole_number(10, 500)
_IDLE_FLUSH = _inherit_or_whole_number(0, 2000)


class UserValves(BaseModel):
    """One user's overrides; every field defaults to "inherit" (the system value).

    "inherit" is explicit rather than "unset" because Open WebUI may store a
    whole form: a stored "inherit" still defers to the system. Text is
    accepted in any case.

    Text batching precedence, per knob: the user's explicit number, then the
    user's profile, then the system (its profile, else its explicit numbers).
    A user profile therefore replaces system numbers too -- the user chose it.
    """

    model_config = ConfigDict(extra="ignore")

    # One flat Literal per choice field: a union of two Literals becomes a JSON
    # schema ``anyOf``, which the 0.12.4 form draws as a text box, not a select.
    LOG_LEVEL: Annotated[Literal[Inherit, LogLevel], _LEVEL_OR_INHERIT] = inherits(
        "Lowest level logged for your chats; inherit: the system's."
    )
    SHOW_FINAL_USAGE_STATUS: Annotated[OnOff, _ON_OFF] = inherits(
        "Show time, tokens and cost when an answer ends."
    )
    ENABLE_REASONING: Annotated[OnOff, _ON_OFF] = inherits("Ask models that can reason to do so.")
    REASONING_EFFORT: Annotated[Literal[Inherit, ReasoningEffort], ANY_CASE] = inherits(
        "How much reasoning to ask for."
    )
    REASONING_SUMMARY_MODE: Annotated[Literal[Inherit, SummaryMode], ANY_CASE] = inherits(
        "How the reasoning summary is requested."
    )
    STREAMING_UPDATE_PROFILE: Annotated[Literal[Inherit, StreamingProfile], ANY_CASE] = inherits(
        "How often the answer text updates: quick (10 chars / 100 ms), normal (20 / 250), "
        "slow (80 / 600)."
    )
    PERSIST_REASONING_TOKENS: Annotated[Literal[Inherit, Retention], ANY_CASE] = inherits(
        "Keep reasoning for the next turn of your chats."
    )
    PERSIST_TOOL_RESULTS: Annotated[OnOff, _ON_OFF] = inherits(
        "Keep tool calls and outputs for later turns."
    )
    STREAMING_UPDATE_CHAR_LIMIT: Annotated[Inherit | int, _CHAR_LIMIT] = inherits(
        "'inherit' or 10-500: send answer text in pieces of this many characters."
    )
    STREAMING_IDLE_FLUSH_MS: Annotated[Inherit | int, _IDLE_FLUSH] = inherits(
        "'inherit' or 0-2000: send waiting text after this many ms of quiet "
        "(0: off; else at least 50)."
    )
