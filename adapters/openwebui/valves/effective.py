"""What one request uses: the system valves with one user's overrides applied.

``effective_settings`` never raises for bad user values: an invalid entry is
dropped (the system's value is used) and described in ``problems``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from orpipe.adapters.openwebui.valves.admin_form import Valves
from orpipe.adapters.openwebui.valves.choices import (
    INHERIT,
    STREAMING_PRESETS,
    LogLevel,
    ReasoningEffort,
    Retention,
    StreamingLimits,
    SummaryMode,
    clamp_idle_flush,
)
from orpipe.adapters.openwebui.valves.errors import describe_lines
from orpipe.adapters.openwebui.valves.user_form import OnOff, UserValves

__all__ = ["EffectiveSettings", "effective_settings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EffectiveSettings:
    """What one request uses, after a user's overrides are applied."""

    log_level: LogLevel
    show_final_status: bool
    enable_reasoning: bool
    reasoning_effort: ReasoningEffort
    reasoning_summary: SummaryMode
    update_char_limit: int
    idle_flush_ms: int
    persist_reasoning: Retention = "next_reply"
    persist_tool_results: bool = True
    #: Readable notes about user values that were ignored (the system's were used).
    problems: tuple[str, ...] = ()


def effective_settings(
    valves: Valves, user: UserValves | Mapping[str, object] | None
) -> EffectiveSettings:
    """Merge the system valves with one user's overrides; never raises for bad user values.

    ``user`` is what Open WebUI put at ``__user__["valves"]`` (a ``UserValves``),
    a plain dict (older Open WebUI, API callers) or ``None``. Invalid entries
    of a dict are dropped one by one -- the rest still apply -- and each is
    described in ``problems``.
    """
    overrides, problems = _user_overrides(user)
    streaming = _user_streaming(valves.streaming_limits(), overrides)
    return EffectiveSettings(
        log_level=valves.LOG_LEVEL if overrides.LOG_LEVEL == INHERIT else overrides.LOG_LEVEL,
        show_final_status=_on_off(
            overrides.SHOW_FINAL_USAGE_STATUS, valves.SHOW_FINAL_USAGE_STATUS
        ),
        enable_reasoning=_on_off(overrides.ENABLE_REASONING, valves.ENABLE_REASONING),
        reasoning_effort=(
            valves.REASONING_EFFORT
            if overrides.REASONING_EFFORT == INHERIT
            else overrides.REASONING_EFFORT
        ),
        reasoning_summary=(
            valves.REASONING_SUMMARY_MODE
            if overrides.REASONING_SUMMARY_MODE == INHERIT
            else overrides.REASONING_SUMMARY_MODE
        ),
        update_char_limit=streaming.char_limit,
        idle_flush_ms=streaming.idle_flush_ms,
        persist_reasoning=(
            valves.PERSIST_REASONING_TOKENS
            if overrides.PERSIST_REASONING_TOKENS == INHERIT
            else overrides.PERSIST_REASONING_TOKENS
        ),
        persist_tool_results=_on_off(overrides.PERSIST_TOOL_RESULTS, valves.PERSIST_TOOL_RESULTS),
        problems=problems,
    )


def _on_off(choice: OnOff, system: bool) -> bool:
    return system if choice == INHERIT else choice == "on"


def _user_streaming(system: StreamingLimits, user: UserValves) -> StreamingLimits:
    base = system
    if user.STREAMING_UPDATE_PROFILE != INHERIT:
        base = STREAMING_PRESETS[user.STREAMING_UPDATE_PROFILE]
    chars, idle = base
    if user.STREAMING_UPDATE_CHAR_LIMIT != INHERIT:
        chars = int(user.STREAMING_UPDATE_CHAR_LIMIT)
    if user.STREAMING_IDLE_FLUSH_MS != INHERIT:
        idle = int(user.STREAMING_IDLE_FLUSH_MS)
    return StreamingLimits(chars, clamp_idle_flush(idle))


def _user_overrides(user: object) -> tuple[UserValves, tuple[str, ...]]:
    # ``object``: whatever a caller passes, a request must not fail on it.
    if user is None:
        return UserValves(), ()
    if isinstance(user, UserValves):
        return user, ()
    if not isinstance(user, Mapping):
        kind = type(user).__name__
        return UserValves(), (f"User settings of type {kind} were ignored.",)
    # As Open WebUI does before validating: a None value means "not given".
    data = {str(key): value for key, value in user.items() if value is not None}
    try:
        return UserValves.model_validate(data), ()
    except ValidationError as exc:
        problems = tuple(
            f"{line}; the system setting is used instead."
            for line in describe_lines(exc, "UserValves")
        )
        bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
        kept = {key: value for key, value in data.items() if key not in bad}
    try:
        return UserValves.model_validate(kept), problems
    except ValidationError:
        return UserValves(), problems
