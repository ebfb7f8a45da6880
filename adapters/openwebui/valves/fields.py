"""How a valve is declared: the field makers and form-text readers both forms share.

Each maker returns a pydantic ``Field`` whose JSON schema is what Open WebUI's
form draws (docs/open-webui-valves.md): ``bounded`` a number with its range,
``from_environment`` a default read when the form is built and shown in the
schema, ``inherits`` a user field that defers to the system. The readers are
``BeforeValidator``s for ``Annotated`` field types: they turn what the form
submits (text in any case, "" for an emptied box) into the declared values
without changing the schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BeforeValidator, Field

from orpipe.adapters.openwebui.valves.choices import INHERIT

__all__ = [
    "ANY_CASE",
    "BLANK_IS_UNSET",
    "UPPER_CASE",
    "blank_to_none",
    "bounded",
    "from_environment",
    "inherits",
    "lower",
    "upper",
]


def blank_to_none(value: object) -> object:
    """The form submits an emptied text box as "": for an optional valve that means unset."""
    if isinstance(value, str) and value.strip().lower() in {"", "none", "null"}:
        return None
    return value


def lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


#: A choice typed in any case (and with stray spaces) is read as the declared one.
ANY_CASE = BeforeValidator(lower)
#: A log level typed in any case.
UPPER_CASE = BeforeValidator(upper)
#: An optional valve whose box was emptied is unset.
BLANK_IS_UNSET = BeforeValidator(blank_to_none)


# The makers return ``Any`` because pydantic's ``Field`` does: the field's
# annotation, not the default, gives its type.


def bounded(default: float | None, limits: tuple[float, float], description: str) -> Any:
    """A number valve: its default, then the (lowest, highest) value the form accepts."""
    low, high = limits
    return Field(default=default, ge=low, le=high, description=description)


def from_environment(factory: Callable[[], str], description: str) -> Any:
    """A valve whose default is read from the environment when the form is built.

    A ``default_factory`` has no default in the JSON schema, so the value is
    added there too: the 0.12.4 form starts a "Custom" value from it.
    """

    def show_default(schema: dict[str, Any]) -> None:
        schema["default"] = factory()

    return Field(default_factory=factory, description=description, json_schema_extra=show_default)


def inherits(description: str) -> Any:
    """A user field that defers to the system setting until the user picks a value."""
    return Field(default=INHERIT, description=description)
