"""Tools Open WebUI runs itself (TOOL_EXECUTION_MODE open-webui): their calls, results and specs.

In engine mode the engine runs tools, replays their calls and outputs from
storage, and Open WebUI's tool messages are not history. In pass-through mode
Open WebUI runs them and they are: 0.12.4 (``utils/middleware.py`` tool loop,
history rebuilt by ``utils/misc.py`` ``convert_output_to_messages``) sends an
assistant message whose ``tool_calls`` are ``{id, type: "function", function:
{name, arguments}}`` and, after it, one ``{role: "tool", tool_call_id,
content}`` per call, content already flattened to a string. Each call becomes
a ``function_call`` item after the assistant's text, each result a
``function_call_output``; a call or result without its partner is left out
with a warning, because OpenRouter rejects unpaired items. The body's
``tools`` (Chat Completions form, what Open WebUI would announce to any model)
become Responses ``function`` tools through
``adapters.openwebui.tool_specs.declare_tools``, only for a model that takes tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.request.tally import JsonDict, Tally
from orpipe.adapters.openwebui.request.text import part_text
from orpipe.adapters.openwebui.tool_specs import ToolDeclarations, declare_tools

__all__ = ["body_tools", "tool_call_items", "tool_result"]

#: Function names OpenRouter's providers accept; others are cleaned like ``declare_tools`` does.
_TOOL_NAME_OK: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_NAME_BAD_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def body_tools(
    tools: Any, model: ModelInfo, tally: Tally, supported: bool, strict: bool
) -> ToolDeclarations | None:
    """The body's Chat Completions ``tools`` declared for the Responses API.

    With native function calling (0.12.4's default) ``process_chat_payload``
    puts ``{type: "function", function: spec}`` there for every tool Open WebUI
    would offer a model: deferred ones behind its tool search left out, tools
    added by inlet filters included; an API client puts its own there. Names,
    strict schemas and the unsupported-model note are ``declare_tools``'s.
    """
    if tools is None:
        return None
    if not isinstance(tools, list | tuple):
        tally.warnings.append(f"tools is a {type(tools).__name__}, not a list; left out")
        return None
    specs: dict[str, Any] = {}
    for n, tool in enumerate(tools):
        kind = tool.get("type", "function") if isinstance(tool, Mapping) else None
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if kind != "function":
            # No Responses shape to translate it to (e.g. a "custom" tool).
            tally.dropped.append(f"tools[{n}] (type {kind!r})")
            continue
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(name, str) or not name.strip():
            tally.warnings.append(f"tools[{n}] has no function name; left out")
            continue
        if name in specs:
            tally.warnings.append(f"tools[{n}] repeats the tool {name!r}; the first one is kept")
            continue
        # declare_tools reads Open WebUI's __tools__ shape: name → {"spec": ...}.
        specs[name] = {"spec": function}
    return declare_tools(specs, supports_tools=supported, strict=strict, model=model.name)


def tool_call_items(index: int, message: Mapping[str, Any], tally: Tally) -> list[JsonDict]:
    """An assistant message's ``tool_calls`` as ``function_call`` items (pass-through mode).

    Open WebUI 0.12.4 sends each as ``{id, type: "function", function: {name,
    arguments}}`` (``utils/misc.py`` ``convert_output_to_messages``). An entry
    without an id or a function name cannot be paired or replayed: it is left
    out with a warning (and its result then is too, as unpaired).
    """
    calls = message.get("tool_calls")
    if not tally.keep_tool_calls or calls is None:
        return []
    where = f"messages[{index}].tool_calls"
    if not isinstance(calls, list | tuple):
        tally.warnings.append(f"{where} is a {type(calls).__name__}, not a list; left out")
        return []
    items: list[JsonDict] = []
    for n, call in enumerate(calls):
        item = _function_call_item(call, f"{where}[{n}]", tally)
        if item is not None:
            items.append(item)
    return items


def _function_call_item(call: Any, where: str, tally: Tally) -> JsonDict | None:
    if not isinstance(call, Mapping):
        tally.warnings.append(f"{where} is a {type(call).__name__}, not an object; left out")
        return None
    kind = call.get("type", "function")
    function = call.get("function")
    if kind != "function" or not isinstance(function, Mapping):
        tally.warnings.append(f"{where} is not a function call ({kind!r}); left out")
        return None
    call_id, name = _id_text(call.get("id")), function.get("name")
    if call_id is None or not isinstance(name, str) or not name.strip():
        missing = "id" if call_id is None else "function name"
        tally.warnings.append(f"{where} has no {missing}; left out")
        return None
    return {
        "type": "function_call",
        # OpenRouter requires an id on function_call input (contract §1.3, §4.8).
        "id": _call_item_id(call_id, tally),
        "call_id": call_id,
        "name": _history_tool_name(name, tally),
        "arguments": _arguments_text(function.get("arguments")),
        "status": "completed",
    }


def _call_item_id(call_id: str, tally: Tally) -> str:
    """A stable item id for a call: ``fc_`` + its call id (OpenAI checks the ``fc``
    prefix, see ``artifact_replay``), suffixed when a call id comes back in a later
    round (some providers restart their ids), because input item ids must be unique."""
    base = call_id if call_id.startswith("fc") else f"fc_{call_id}"
    item_id, n = base, 1
    while item_id in tally.call_item_ids:
        n += 1
        item_id = f"{base}_{n}"
    tally.call_item_ids.add(item_id)
    return item_id


def _history_tool_name(name: str, tally: Tally) -> str:
    """The name the model was offered for a tool Open WebUI knows as ``name``.

    The renderer hands a call to a renamed tool back under Open WebUI's name, so
    it comes back under that name too; the model must read the one it called.
    A name with no known rename but characters providers refuse is cleaned.
    """
    announced = tally.history_names.get(name)
    if announced is not None:
        return announced
    if _TOOL_NAME_OK.match(name):
        return name
    return _TOOL_NAME_BAD_CHARS.sub("_", name)[:64]


def _arguments_text(arguments: Any) -> str:
    """The arguments as the JSON string the Responses API takes.

    A string is kept byte for byte, even when it is not valid JSON: it is what
    the model wrote, and the tool's result (Open WebUI's "could not be parsed")
    explains what went wrong. Only an empty string becomes ``{}``: a call with
    no arguments, which a provider converting it to an object could not parse.
    """
    if isinstance(arguments, str):
        return arguments if arguments.strip() else "{}"
    if arguments is None:
        return "{}"
    return json.dumps(arguments, ensure_ascii=False, default=str)


def tool_result(
    index: int, message: Mapping[str, Any], model: ModelInfo, tally: Tally
) -> JsonDict | None:
    """A tool's result as ``function_call_output`` (pass-through mode); dropped otherwise.

    In engine mode the engine runs tools itself and replays their outputs
    from storage, so results of tools Open WebUI ran are not history. A result
    without ``tool_call_id`` (the legacy ``function`` role has none) cannot be
    paired with its call and is left out with a warning.
    """
    where = f"messages[{index}] (role {message['role']})"
    if not tally.keep_tool_calls:
        tally.dropped.append(where)
        return None
    call_id = _id_text(message.get("tool_call_id"))
    if call_id is None:
        tally.warnings.append(f"{where} has no tool_call_id; left out")
        return None
    output = _tool_output(message.get("content"), where, tally)
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _tool_output(content: Any, where: str, tally: Tally) -> str:
    """A tool message's content as text.

    0.12.4 already sends a string. A list of parts (other clients) keeps its
    text parts, joined as Open WebUI joins them; other parts are listed as
    dropped. Anything else is a value a client put there: sent as JSON rather
    than refusing the whole request over one tool result.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        texts = []
        for part in content:
            text = part if isinstance(part, str) else part_text(part)
            if text is None:
                tally.dropped.append(f"{where} non-text output part")
            else:
                texts.append(text)
        return "".join(texts)
    if isinstance(content, Mapping):
        text = part_text(content) if "type" in content else None
        if text is not None:
            return text
    return json.dumps(content, ensure_ascii=False, default=str)


def _id_text(value: Any) -> str | None:
    """A call id as text; None when there is none (bools are not ids)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if text.strip() else None
