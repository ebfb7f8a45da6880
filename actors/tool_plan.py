"""Which of a turn's function calls run together: the tool executor's plan. Synchronous.

The model may ask for several calls in one turn. ``plan_round`` reads them
(``function_call`` items) and groups them into batches:

* Calls to the **same function** share a batch, up to ``cap`` calls, when
  they are independent: neither call's arguments carry one of the keys
  ``depends_on``, ``_depends_on``, ``sequential`` or ``no_batch``, and
  neither call's arguments mention the other's ``call_id`` anywhere.
* A call that asks for order (``depends_on``, ``_depends_on``,
  ``sequential``) or mentions an earlier call's id gets a batch of its own
  that starts only after every earlier batch has finished: that is what
  those keys mean to whoever wrote them. ``no_batch`` only keeps the call
  out of batches; it does not make it wait.
* Everything else may run at once, within the executor's limits.

A batch shares one time limit (``tool_batch_timeout_s``). Outputs are
reported in the model's call order whatever order the calls finish in.

A call whose ``arguments`` are not a JSON object is planned too, with the
reason it cannot run (``problem``): it becomes a failed output for the
model to read, not an error of the request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from orpipe.actors.tool_outputs import CallOutcome, Verdict
from orpipe.engine.messages import JsonObject

__all__ = ["Batch", "PlannedCall", "plan_round", "read_call"]

#: Argument keys by which a caller asks for a call not to be batched.
_NO_BATCH_KEYS = frozenset({"depends_on", "_depends_on", "sequential", "no_batch"})
#: Of those, the ones that also ask for the earlier calls to finish first.
_ORDER_KEYS = frozenset({"depends_on", "_depends_on", "sequential"})

_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedCall:
    """One function call as the executor will run it."""

    #: Position in the model's order (outputs are reported in this order).
    index: int
    call_id: str
    name: str
    #: The decoded arguments; None when ``problem`` says why there are none.
    arguments: Mapping[str, Any] | None
    problem: str | None = None
    #: Strings found anywhere in the arguments (for the call-id rule).
    strings: tuple[str, ...] = ()

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.arguments or ())

    def mentions(self, call_id: str) -> bool:
        """Whether ``call_id`` appears in any string of the arguments."""
        return any(call_id in text for text in self.strings)

    def outcome(self, verdict: Verdict, text: str, elapsed_s: float | None = None) -> CallOutcome:
        """How this call ended."""
        return CallOutcome(
            call_id=self.call_id, name=self.name, verdict=verdict, text=text, elapsed_s=elapsed_s
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """Calls that run together under one time limit."""

    calls: tuple[PlannedCall, ...]
    #: Start only after every earlier batch has finished.
    after_earlier: bool = False

    @property
    def name(self) -> str:
        return self.calls[0].name


def read_call(item: JsonObject, index: int) -> PlannedCall:
    """A ``function_call`` item as a ``PlannedCall`` (``problem`` set when it cannot run)."""
    call_id = str(item.get("call_id") or item.get("id") or f"call_{index}")
    name = str(item.get("name") or "")
    raw = item.get("arguments")
    if not name:
        return PlannedCall(
            index=index, call_id=call_id, name="?", arguments=None, problem="the call has no name"
        )
    if isinstance(raw, Mapping):  # some providers send an object already
        arguments: Any = raw
    elif raw is None or (isinstance(raw, str) and not raw.strip()):
        arguments = {}  # a function without parameters is often called with ""
    elif isinstance(raw, str):
        try:
            arguments = _decode(raw)
        except (msgspec.DecodeError, UnicodeError):  # a lone surrogate cannot be encoded
            return PlannedCall(
                index=index,
                call_id=call_id,
                name=name,
                arguments=None,
                problem="its arguments are not valid JSON",
            )
    else:
        arguments = None
    if not isinstance(arguments, Mapping):
        return PlannedCall(
            index=index,
            call_id=call_id,
            name=name,
            arguments=None,
            problem="its arguments are not a JSON object",
        )
    return PlannedCall(
        index=index,
        call_id=call_id,
        name=name,
        arguments=arguments,
        strings=tuple(_strings(arguments)),
    )


def plan_round(calls: Sequence[JsonObject], cap: int) -> tuple[list[PlannedCall], list[Batch]]:
    """All calls of a turn, and the batches of those that can run, in the model's order."""
    planned = [read_call(item, index) for index, item in enumerate(calls)]
    runnable = [call for call in planned if call.problem is None]
    return planned, _batches(runnable, cap)


def _batches(calls: list[PlannedCall], cap: int) -> list[Batch]:
    batches: list[Batch] = []
    #: Batches still taking calls, by function name (latest last).
    open_batches: dict[str, list[PlannedCall]] = {}
    slots: dict[int, int] = {}  # id(list) → position in ``batches``
    earlier_ids: list[str] = []
    for call in calls:
        waits = bool(call.keys & _ORDER_KEYS) or any(map(call.mentions, earlier_ids))
        earlier_ids.append(call.call_id)
        if waits or call.keys & _NO_BATCH_KEYS:
            batches.append(Batch(calls=(call,), after_earlier=waits))
            if waits:
                open_batches.clear()  # later calls must not join a batch before this one
            continue
        members = open_batches.get(call.name)
        if members is not None and len(members) < cap and _independent(call, members):
            members.append(call)
            position = slots[id(members)]
            batches[position] = Batch(calls=tuple(members))
            continue
        members = [call]
        open_batches[call.name] = members
        slots[id(members)] = len(batches)
        batches.append(Batch(calls=(call,)))
    return batches


def _independent(call: PlannedCall, members: list[PlannedCall]) -> bool:
    """Neither ``call`` nor any member mentions the other's call id."""
    return all(
        not other.mentions(call.call_id) and not call.mentions(other.call_id) for other in members
    )


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value (keys too), for the call-id rule."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, Mapping):
            found.extend(str(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found
