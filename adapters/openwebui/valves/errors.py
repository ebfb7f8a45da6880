"""How a rejected valve is reported: ``ValveError`` and one readable line per bad setting.

``ValveError`` is raised when a valve holds a value the pipe cannot use
(an unreadable secret, a value the engine refuses); ``describe_validation_error``
turns pydantic's errors on either form into lines an admin can act on. Neither
ever echoes a secret valve's value.
"""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from orpipe.engine.errors import ConfigError

__all__ = ["SECRET_VALVES", "ValveError", "describe_lines", "describe_validation_error"]

#: Valves whose rejected value is never echoed in a message: keys, a database URL
#: that may hold a password, and MCP servers whose headers carry bearer tokens.
SECRET_VALVES = frozenset(
    {
        "API_KEY",
        "ARTIFACT_ENCRYPTION_KEY",
        "ARTIFACT_DATABASE_URL",
        "REMOTE_MCP_SERVERS_JSON",
        "TELEMETRY_TOKEN",
    }
)

_BOUNDS = {
    "greater_than_equal": ("must be at least", "ge"),
    "less_than_equal": ("must be at most", "le"),
    "greater_than": ("must be more than", "gt"),
    "less_than": ("must be less than", "lt"),
}


class ValveError(ConfigError):
    """A valve holds a value the pipe cannot use; the message tells the admin what to do.

    A ``ConfigError`` (a settings problem to fix, not a transient failure), so
    callers that already report configuration mistakes report this one too.
    ``field`` and ``valve`` are the valve's name; ``value`` is ``None`` for secrets.
    """

    def __init__(
        self, valve: str, message: str, *, value: object = None, allowed: str = ""
    ) -> None:
        # Not ConfigError.__init__: its message embeds repr(value), which for
        # API_KEY would be the ciphertext.
        Exception.__init__(self, message)
        self.field = valve
        self.valve = valve
        self.value = value
        self.allowed = allowed
        self.message = message


def describe_validation_error(exc: ValidationError, model_name: str) -> str:
    """One readable line per rejected setting, e.g.
    ``Valves: MAX_CONCURRENT_REQUESTS must be at most 2000 (got 5000)``.

    The rejected value is shown except for secrets (``SECRET_VALVES``).
    """
    return "\n".join(describe_lines(exc, model_name))


def describe_lines(exc: ValidationError, model_name: str) -> list[str]:
    """``describe_validation_error``'s lines, one per rejected setting."""
    return [_describe_one(error, model_name) for error in exc.errors()]


def _describe_one(error: ErrorDetails, model_name: str) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(settings)"
    problem = _problem_text(error)
    line = f"{model_name}: {field} {problem}"
    if field in SECRET_VALVES or error["type"] == "missing" or "input" not in error:
        return line
    return f"{line} (got {_short_repr(error['input'])})"


def _problem_text(error: ErrorDetails) -> str:
    ctx = error.get("ctx") or {}
    kind = error["type"]
    if kind in _BOUNDS:
        words, key = _BOUNDS[kind]
        return f"{words} {ctx.get(key)}"
    if kind in {"int_parsing", "int_type", "int_from_float"}:
        return "must be a whole number"
    if kind in {"bool_parsing", "bool_type"}:
        return "must be on or off (true or false)"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}"
    if kind in {"string_type", "string_sub_type"}:
        return "must be text"
    if kind == "value_error" and "error" in ctx:
        # Our validators phrase their messages to follow the valve's name.
        return str(ctx["error"])
    if kind == "missing":
        return "is required"
    return f"is invalid: {error['msg']}"


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
