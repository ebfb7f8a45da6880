"""Open WebUI tool specs as Responses ``function`` tools: names, strict schemas, duplicates.

``declare_tools`` takes ``__tools__`` (name → entry with ``spec``, ``callable``,
``tool_id``, ``type``; contract §2.5.1) and returns the tools to announce
upstream and run. What a person can act on goes into ``notes`` (shown as
notifications): a tool left out, a model without tool calling. What it
adjusted on its own -- a name cleaned, strict checking not possible -- the
user can do nothing about, so it is logged at debug level on ``orpipe.owui``
instead:

* Only for models whose catalogue entry supports tools: OpenRouter answers
  404 "No endpoints found that support tool use" otherwise (seed §K.1 #58),
  so the tools are left out with a note instead.
* A tool's name is its ``__tools__`` key, the name Open WebUI knows it by
  (docs/open-webui-notes.md, "Tool calls run by the engine"). The spec's
  ``name`` is used only when the key is not usable text.
* Names must match ``^[a-zA-Z0-9_-]{1,64}$``: other characters become ``_``
  and long names are cut. A name that needed no change always keeps it;
  changed names that then clash are taken in order of (cleaned name, key) —
  the first gets the cleaned name if it is free, later ones ``_2``, ``_3``,
  … — so the result does not depend on the order of ``__tools__``. Every
  change is logged and listed in ``renamed`` (announced name → key), which
  pass-through mode needs to give Open WebUI its own names back.
* Open WebUI's built-in tools (entry ``type`` ``"builtin"``) are offered
  the way Open WebUI offers them itself: their schema unchanged, without
  ``strict``.
* With ``ENABLE_STRICT_TOOL_CALLING`` the parameters schema of every other
  tool is made strict (``strict_schema``) and the tool is announced with
  ``strict: true`` — unless the schema has a free-form object
  (``additionalProperties`` true or a schema, ``patternProperties``, or a
  nested object with no ``properties`` key): strict mode cannot describe
  one, and forcing it closed would let the model send only ``{}``. Such a
  tool is announced as given, without ``strict``.

``strict_schema`` makes a JSON schema acceptable to strict function calling:
every object lists all its properties in ``required`` and has
``additionalProperties: false``; a property that was optional becomes
nullable, so the model can still leave it out (by sending ``null``, which
``adapters.openwebui.tools`` drops again before calling the function). Results
are cached per schema (bounded), and copies are returned, so no caller can
change the cache.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec

from orpipe.adapters.openwebui.tools import DeclaredTool

__all__ = ["ToolDeclarations", "declare_tools", "function_spec", "strict_schema", "unique_name"]

log = logging.getLogger("orpipe.owui")

_NAME_OK = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_NAME = 64
#: Keys whose values are sub-schemas, or maps / lists of them.
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "not", "additionalItems", "contains")
_EMPTY_OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "required": [],
    "additionalProperties": False,
}

# Key order is kept: it is the order the model reads the properties in.
_canonical = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolDeclarations:
    """What ``declare_tools`` decided: the tools to use, and what a person should know."""

    tools: tuple[DeclaredTool, ...] = ()
    #: For the user (notifications): only what they can act on.
    notes: tuple[str, ...] = field(default=())
    #: Announced name → ``__tools__`` key, for each tool offered under another name.
    renamed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def function_spec(tool: DeclaredTool) -> dict[str, Any]:
    """A declared tool as a Responses ``function`` tool (flat: no ``function`` wrapper)."""
    spec: dict[str, Any] = {"type": "function", "name": tool.name}
    if tool.description:
        spec["description"] = tool.description
    spec["parameters"] = dict(tool.parameters)
    if tool.strict:
        spec["strict"] = True
    return spec


def declare_tools(
    owui_tools: Mapping[str, Any] | None, *, supports_tools: bool, strict: bool, model: str = ""
) -> ToolDeclarations:
    """The Open WebUI tools of one request, ready for the engine (see the module docstring)."""
    if not owui_tools:
        return ToolDeclarations()
    if not supports_tools:
        return ToolDeclarations(
            notes=(
                f"{model or 'This model'} does not support tool calling on OpenRouter, so "
                f"the {len(owui_tools)} enabled tool(s) were left out of this answer.",
            )
        )
    notes: list[str] = []
    candidates: list[_Candidate] = []
    for key, entry in owui_tools.items():
        spec = entry.get("spec") if isinstance(entry, Mapping) else None
        if not isinstance(spec, Mapping):
            notes.append(f"Tool {key!r} has no usable specification and was left out.")
            continue
        original = key if isinstance(key, str) and key.strip() else spec.get("name")
        if not isinstance(original, str) or not original.strip():
            notes.append(f"A tool from {entry.get('tool_id')!r} has no name and was left out.")
            continue
        candidates.append(_Candidate(_clean_name(original), original, entry, spec))
    # Names that need no change are never taken by a changed one: reserve them first.
    taken = {c.clean for c in candidates if c.clean == c.original}
    renamed: dict[str, str] = {}
    declared: list[DeclaredTool] = []
    for c in sorted(candidates, key=lambda c: (c.clean, c.original)):
        final = c.clean if c.clean == c.original else unique_name(c.clean, taken)
        taken.add(final)
        if final != c.original:
            renamed[final] = c.original
            log.debug("%s", _rename_note(c, final))
        declared.append(_declared(c, final, strict=strict))
    return ToolDeclarations(
        tools=tuple(declared), notes=tuple(notes), renamed=MappingProxyType(renamed)
    )


@dataclass(frozen=True, slots=True)
class _Candidate:
    clean: str
    original: str
    entry: Mapping[str, Any]
    spec: Mapping[str, Any]


def _declared(c: _Candidate, name: str, *, strict: bool) -> DeclaredTool:
    parameters = c.spec.get("parameters")
    schema: Mapping[str, Any] = (
        parameters if isinstance(parameters, Mapping) else {"type": "object"}
    )
    if strict and c.entry.get("type") == "builtin":
        log.debug(
            "tool %r is one of Open WebUI's built-in tools: offered as Open WebUI offers it, "
            "without strict checking",
            name,
        )
        strict = False
    elif strict and _has_free_form_object(schema, root=True):
        log.debug(
            "tool %r takes a free-form object, which strict tool calling cannot describe: "
            "offered without strict checking",
            name,
        )
        strict = False
    if strict:
        schema = strict_schema(schema)
    return DeclaredTool(
        name=name,
        entry=c.entry,
        description=str(c.spec.get("description") or ""),
        parameters=copy.deepcopy(dict(schema)),
        strict=strict,
    )


def _rename_note(c: _Candidate, final: str) -> str:
    source = c.entry.get("tool_id")
    origin = f" (from {source})" if source else ""
    if final == c.clean:
        why = "tool names may only hold letters, digits, '_' and '-', at most 64"
    else:
        why = f"{c.clean!r} is already taken"
    return f"Tool {c.original!r}{origin} is offered to the model as {final!r}: {why}."


def _clean_name(name: str) -> str:
    if _NAME_OK.match(name):
        return name
    cleaned = _NAME_BAD_CHARS.sub("_", name)[:_MAX_NAME] or "tool"
    return cleaned


def _has_free_form_object(schema: object, *, root: bool = False) -> bool:
    """Whether some object in ``schema`` takes keys it does not list.

    An object with ``properties`` (even ``{}``) that says nothing about
    others is read as closed: that is what tool authors mean. One without
    ``properties`` is open, except at the root, where it is a tool without
    arguments.
    """
    if not isinstance(schema, Mapping):
        return False
    if _is_object(schema):
        extra = schema.get("additionalProperties")
        if (extra is not None and extra is not False) or schema.get("patternProperties"):
            return True
        if not root and extra is None and "properties" not in schema:
            return True
    children: list[object] = []
    for key in _SCHEMA_MAPS:
        group = schema.get(key)
        if isinstance(group, Mapping):
            children.extend(group.values())
    for key in _SCHEMA_LISTS:
        group = schema.get(key)
        if isinstance(group, list):
            children.extend(group)
    children.extend(schema.get(key) for key in _SCHEMA_ONE)
    return any(_has_free_form_object(child) for child in children)


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or else ``name_2``, ``name_3``, … (cut to stay within 64 characters):
    the first not in ``taken``. Tool names and MCP server labels share the limit."""
    if name not in taken:
        return name
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = name[: _MAX_NAME - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


# -- strict schemas ------------------------------------------------------------------


def strict_schema(schema: object) -> dict[str, Any]:
    """A strict copy of ``schema`` (see the module docstring); never changes the input.

    Anything but a JSON object (a tool with a broken spec) gives the strict
    empty-object schema: the tool then takes no arguments.
    """
    if not isinstance(schema, Mapping):
        return copy.deepcopy(_EMPTY_OBJECT)
    try:
        key = _canonical(schema).decode()
    except (TypeError, msgspec.EncodeError):
        strict: dict[str, Any] = _strict(copy.deepcopy(dict(schema)))  # not JSON: no cache
        return strict
    return copy.deepcopy(_cached(key))


@functools.lru_cache(maxsize=256)
def _cached(key: str) -> dict[str, Any]:
    strict: dict[str, Any] = _strict(msgspec.json.decode(key))
    return strict


def _strict(schema: Any) -> Any:
    """Make ``schema`` (a fresh copy, changed in place) strict, recursively."""
    if not isinstance(schema, dict):
        return schema
    for key in _SCHEMA_MAPS:
        children = schema.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                children[name] = _strict(child)
    for key in _SCHEMA_LISTS:
        children = schema.get(key)
        if isinstance(children, list):
            schema[key] = [_strict(child) for child in children]
    for key in _SCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            schema[key] = _strict(schema[key])
    if _is_object(schema):
        properties = schema.setdefault("properties", {})
        if not isinstance(properties, dict):
            properties = schema["properties"] = {}
        required = schema.get("required")
        already = set(required) if isinstance(required, list) else set()
        for name, child in properties.items():
            if name not in already:
                properties[name] = _nullable(child)
        schema["required"] = list(properties)
        schema["additionalProperties"] = False
    return schema


def _is_object(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind):
        return True
    return kind is None and "properties" in schema


def _nullable(schema: Any) -> Any:
    """``schema`` that also accepts ``null`` (how strict mode spells "optional")."""
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if isinstance(kind, str):
        if kind != "null":
            schema["type"] = [kind, "null"]
            if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
                schema["enum"] = [*schema["enum"], None]
        return schema
    if isinstance(kind, list):
        if "null" not in kind:
            schema["type"] = [*kind, "null"]
        # An enum limits the values too: null must be one of them.
        if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
            schema["enum"] = [*schema["enum"], None]
        return schema
    variants = schema.get("anyOf")
    if isinstance(variants, list):
        if not any(isinstance(v, dict) and v.get("type") == "null" for v in variants):
            schema["anyOf"] = [*variants, {"type": "null"}]
        return schema
    return {"anyOf": [schema, {"type": "null"}]}
