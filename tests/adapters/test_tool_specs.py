"""Open WebUI tool specs → Responses function tools: strict schemas, names, duplicates."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from adapters.tool_specs import declare_tools, strict_schema


def entry(name: str, tool_id: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "description": f"{name} from {tool_id}"}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"tool_id": tool_id, "callable": lambda **kw: kw, "spec": spec}


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": ["integer"]},
        "where": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        "ref": {"$ref": "#/$defs/Place"},
        "filters": {
            "type": "object",
            "properties": {"min": {"type": "number"}, "max": {"type": "number"}},
            "required": ["min"],
        },
        "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {}}}},
    },
    "required": ["city"],
    "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}}},
}


def test_strict_schema_lists_every_property_and_forbids_others() -> None:
    strict = strict_schema(WEATHER)
    assert strict["required"] == list(WEATHER["properties"])
    assert strict["additionalProperties"] is False
    props = strict["properties"]
    assert props["city"] == {"type": "string"}  # required: unchanged
    assert props["unit"] == {"type": ["string", "null"], "enum": ["c", "f", None]}
    assert props["days"] == {"type": ["integer", "null"]}
    assert props["where"]["anyOf"][-1] == {"type": "null"}
    assert props["ref"] == {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}]}
    nested = props["filters"]
    assert nested["type"] == ["object", "null"]
    assert nested["required"] == ["min", "max"]
    assert nested["properties"]["max"] == {"type": ["number", "null"]}
    assert nested["additionalProperties"] is False
    item = props["tags"]["type"] and strict["properties"]["tags"]["items"]
    assert item["additionalProperties"] is False and item["required"] == ["k"]
    place = strict["$defs"]["Place"]
    assert place["required"] == ["lat"] and place["additionalProperties"] is False


def test_strict_schema_never_changes_its_input_or_its_cache() -> None:
    before = copy.deepcopy(WEATHER)
    first = strict_schema(WEATHER)
    assert before == WEATHER
    first["properties"]["city"]["type"] = "boom"  # a caller scribbling on the result
    assert strict_schema(WEATHER)["properties"]["city"] == {"type": "string"}


def test_garbage_becomes_an_empty_object_schema() -> None:
    for bad in (None, "nope", 3, ["a"]):
        assert strict_schema(bad) == {
            "type": "object",
            "properties": {},
            "required": [],
            "additionalProperties": False,
        }
    assert strict_schema({"type": "object"})["required"] == []


json_types = st.sampled_from(["string", "number", "integer", "boolean"])
leaf = st.builds(lambda t: {"type": t}, json_types)
schemas = st.recursive(
    leaf,
    lambda children: st.builds(
        lambda props, req: {
            "type": "object",
            "properties": props,
            "required": [k for k in props if k in req],
        },
        st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), children, max_size=4),
        st.sets(st.text("abcxyz", min_size=1, max_size=3)),
    ),
    max_leaves=12,
)


def _objects(schema: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(schema, dict):
        if "properties" in schema:
            found.append(schema)
        for value in schema.values():
            found.extend(_objects(value))
    elif isinstance(schema, list):
        for value in schema:
            found.extend(_objects(value))
    return found


@given(schemas)
def test_every_object_is_strict_and_strictifying_twice_changes_nothing(schema: Any) -> None:
    original = copy.deepcopy(schema)
    strict = strict_schema(schema)
    assert schema == original
    for obj in _objects(strict):
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    assert strict_schema(strict) == strict


def test_declared_tools_are_strict_and_named_for_the_model() -> None:
    result = declare_tools(
        {"get_weather": entry("get_weather", "weather", WEATHER)}, supports_tools=True, strict=True
    )
    (tool,) = result.tools
    assert tool.name == "get_weather" and tool.strict
    assert tool.parameters == strict_schema(WEATHER)
    assert tool.description == "get_weather from weather"
    assert result.notes == ()


def test_without_strict_mode_the_schema_is_sent_as_given() -> None:
    result = declare_tools(
        {"get_weather": entry("get_weather", "weather", WEATHER)}, supports_tools=True, strict=False
    )
    assert result.tools[0].parameters == WEATHER and not result.tools[0].strict


def test_duplicates_are_resolved_the_same_way_every_time_and_reported() -> None:
    tools = {
        "search": entry("search", "web"),
        "search_docs": entry("search", "docs"),
        "search_wiki": entry("search", "wiki"),
    }
    result = declare_tools(tools, supports_tools=True, strict=True)
    names = {t.entry["tool_id"]: t.name for t in result.tools}
    assert names == {"docs": "search", "web": "search_2", "wiki": "search_3"}
    assert len(result.notes) == 2 and "offered to the model as 'search_2'" in result.notes[0]
    reordered = dict(reversed(list(tools.items())))
    again = declare_tools(reordered, supports_tools=True, strict=True)
    assert {t.entry["tool_id"]: t.name for t in again.tools} == names


def test_names_are_made_valid_for_the_api() -> None:
    result = declare_tools(
        {"x": entry("weather lookup/v2." + "x" * 80, "w")}, supports_tools=True, strict=True
    )
    name = result.tools[0].name
    assert name.startswith("weather_lookup_v2_") and len(name) == 64


def test_a_model_without_tool_support_gets_none_and_the_user_is_told() -> None:
    result = declare_tools(
        {"get_weather": entry("get_weather", "weather", WEATHER)},
        supports_tools=False,
        strict=True,
        model="some/image-model",
    )
    assert result.tools == ()
    assert "some/image-model does not support tool calling" in result.notes[0]


def test_entries_without_a_spec_are_left_out_with_a_note() -> None:
    result = declare_tools(
        {"broken": {"tool_id": "x", "callable": print}, "ok": entry("ok", "y")},
        supports_tools=True,
        strict=True,
    )
    assert [t.name for t in result.tools] == ["ok"]
    assert "'broken' has no usable specification" in result.notes[0]


def test_no_tools_no_notes() -> None:
    assert declare_tools(None, supports_tools=False, strict=True).notes == ()
    assert declare_tools({}, supports_tools=True, strict=True).tools == ()
