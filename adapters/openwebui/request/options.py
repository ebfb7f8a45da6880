"""The body's request parameters → the Responses request's ``options``.

Maximum output tokens, sampling numbers, ``parallel_tool_calls``,
``reasoning`` (only for a model that takes it, when enabled), the response
format as ``text.format`` and OpenRouter's web plugin. Departures from the
original pipe (seed inventory §B.3-B.4): a ``max_tokens`` the user set is
always honoured (as ``max_output_tokens``); ``response_format`` becomes
``text.format``, the Responses name for it; the web plugin is attached on the
chat's toggle or an admin's force list only, never merely because a model is
priced for web search.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.request.settings import RequestSettings
from orpipe.adapters.openwebui.request.tally import (
    JsonDict,
    RequestMappingError,
    Tally,
    set_present,
)

__all__ = ["REASONING_EFFORTS", "body_options"]

#: Reasoning efforts OpenRouter accepts (contract §1.5).
REASONING_EFFORTS: Final = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
#: Body keys the mapping reads (and so never lists as dropped). Reasoning keys are
#: read only when reasoning applies; see ``_reasoning``.
_READ_KEYS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "response_format",
    }
)


def body_options(
    body: Mapping[str, Any],
    model: ModelInfo,
    settings: RequestSettings,
    features: Any,
    tally: Tally,
) -> tuple[JsonDict, set[str]]:
    """The request's options, and the body keys read for them (never listed as dropped)."""
    options: JsonDict = {}
    read = set(_READ_KEYS)
    set_present(options, "max_output_tokens", _max_output_tokens(body, model, settings))
    for key in ("temperature", "top_p"):
        set_present(options, key, _sampling_number(body, key, tally))
    set_present(options, "parallel_tool_calls", _flag(body, "parallel_tool_calls", tally))
    reasoning = _reasoning(body, model, settings)
    if reasoning is not None:
        options["reasoning"] = reasoning
        read |= {"reasoning", "reasoning_effort"}
    text_format = _text_format(body.get("response_format"))
    if text_format is not None:
        options["text"] = {"format": text_format}
    plugins = _plugins(model, settings, features, tally)
    if plugins:
        options["plugins"] = plugins
    return options, read


def _max_output_tokens(
    body: Mapping[str, Any], model: ModelInfo, settings: RequestSettings
) -> int | None:
    # The newer Chat Completions name first; both mean the user's own limit.
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            return _positive_int(value, key)
    if settings.use_model_max_output_tokens:
        return model.max_output_tokens
    return None


def _positive_int(value: Any, key: str) -> int:
    # A limit the user set is a cost bound: a malformed one is refused, not ignored.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RequestMappingError(
            f"{key} is {value!r}, not a positive whole number",
            "Fix max tokens in the chat's or model's advanced parameters.",
        )
    return value


def _sampling_number(body: Mapping[str, Any], key: str, tally: Tally) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        tally.dropped.append(key)  # not a number: sending it would only earn a 400
        return None
    return value


def _flag(body: Mapping[str, Any], key: str, tally: Tally) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    tally.dropped.append(key)
    return None


def _reasoning(
    body: Mapping[str, Any], model: ModelInfo, settings: RequestSettings
) -> JsonDict | None:
    """The ``reasoning`` object, only for models that take one and when enabled."""
    if not (model.reasoning and settings.enable_reasoning):
        return None
    config: JsonDict = {"effort": _effort(body.get("reasoning_effort"), settings)}
    if settings.reasoning_summary != "disabled":
        config["summary"] = settings.reasoning_summary
    caller = body.get("reasoning")
    if caller is not None:
        if not isinstance(caller, Mapping):
            raise RequestMappingError(
                f"reasoning is a {type(caller).__name__}, not an object",
                'Give reasoning as an object such as {"effort": "high"}.',
            )
        # The caller's explicit values win over the valves.
        config.update({str(key): value for key, value in caller.items() if value is not None})
    return config


def _effort(requested: Any, settings: RequestSettings) -> str:
    if requested is None:
        return settings.reasoning_effort
    effort = requested.strip().lower() if isinstance(requested, str) else None
    if effort == "":
        return settings.reasoning_effort  # an emptied form field asks for nothing
    if effort not in REASONING_EFFORTS:
        raise RequestMappingError(
            f"reasoning_effort is {requested!r}",
            f"Use one of {', '.join(sorted(REASONING_EFFORTS))} in the advanced parameters.",
        )
    return effort


def _text_format(response_format: Any) -> JsonDict | None:
    """Chat Completions ``response_format`` → Responses ``text.format``."""
    if response_format is None:
        return None
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "text":
        return None  # plain text is the default; nothing to ask for
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        return _json_schema_format(response_format.get("json_schema"))
    raise RequestMappingError(
        f"response_format {response_format!r} is not understood",
        'Use {"type": "text"}, {"type": "json_object"} or '
        '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}.',
    )


def _json_schema_format(spec: Any) -> JsonDict:
    fix = 'Give response_format.json_schema as {"name": ..., "schema": {...}, "strict": true}.'
    if not isinstance(spec, Mapping):
        raise RequestMappingError("response_format.json_schema is missing", fix)
    name, schema = spec.get("name"), spec.get("schema")
    if not isinstance(name, str) or not name:
        raise RequestMappingError("response_format.json_schema has no name", fix)
    if not isinstance(schema, Mapping):
        raise RequestMappingError("response_format.json_schema has no schema object", fix)
    text_format: JsonDict = {"type": "json_schema", "name": name, "schema": schema}
    strict = spec.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise RequestMappingError(f"response_format.json_schema.strict is {strict!r}", fix)
        text_format["strict"] = strict
    description = spec.get("description")
    if isinstance(description, str) and description:
        text_format["description"] = description
    return text_format


def _plugins(
    model: ModelInfo, settings: RequestSettings, features: Any, tally: Tally
) -> list[JsonDict]:
    """OpenRouter's web plugin: on the chat's toggle or an admin's force list only.

    The plugin is billed per request, so it is never attached merely because
    the model has web-search pricing (the original did; seed inventory §B.3.16).
    """
    toggled = isinstance(features, Mapping) and bool(features.get("web_search"))
    forced = bool({model.openrouter_id, model.sub_id} & settings.web_search_force_models)
    if toggled and not settings.enable_web_search and not forced:
        tally.notes.append(
            "Web search is turned off in this pipe's settings; answering without it."
        )
    if not (forced or (toggled and settings.enable_web_search)):
        return []
    plugin: JsonDict = {"id": "web"}
    set_present(plugin, "max_results", settings.web_search_max_results)
    return [plugin]
