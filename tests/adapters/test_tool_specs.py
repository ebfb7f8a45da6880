"""Open WebUI tool specs → Responses function tools: strict schemas, names, duplicates."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orpipe.adapters.openwebui.tool_specs import declare_tools, strict_schema


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


def test_the_tools_key_is_the_name_open_webui_knows() -> None:
    """0.12.4 resolves its own clashes in the keys (tool id prefix); calls come back by key."""
    tools = {
        "search": entry("search", "web"),
        "docs_search": entry("search", "docs"),  # a spec name left behind
    }
    result = declare_tools(tools, supports_tools=True, strict=True)
    assert {t.entry["tool_id"]: t.name for t in result.tools} == {
        "web": "search",
        "docs": "docs_search",
    }
    assert result.notes == () and dict(result.renamed) == {}


def test_the_spec_name_is_used_when_the_key_is_not_text() -> None:
    result = declare_tools({"": entry("lookup", "w")}, supports_tools=True, strict=True)
    assert [t.name for t in result.tools] == ["lookup"]
    nameless = {"tool_id": "x", "callable": print, "spec": {"description": "?"}}
    result = declare_tools({" ": nameless}, supports_tools=True, strict=True)
    assert result.tools == () and "has no name and was left out" in result.notes[0]


def debug_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "orpipe.owui" and r.levelno == logging.DEBUG
    ]


def test_cleaned_names_that_clash_are_resolved_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A renamed tool is nothing the user can change: a debug line, no note."""
    tools = {"a.b": entry("a.b", "dots"), "a b": entry("a b", "space"), "a_b": entry("a_b", "ok")}
    with caplog.at_level(logging.DEBUG, logger="orpipe.owui"):
        result = declare_tools(tools, supports_tools=True, strict=True)
    assert {t.entry["tool_id"]: t.name for t in result.tools} == {
        "ok": "a_b",  # needed no change: keeps its name
        "space": "a_b_2",  # ' ' sorts before '.'
        "dots": "a_b_3",
    }
    assert dict(result.renamed) == {"a_b_2": "a b", "a_b_3": "a.b"}
    assert result.notes == ()
    assert debug_lines(caplog) == [
        "Tool 'a b' (from space) is offered to the model as 'a_b_2': 'a_b' is already taken.",
        "Tool 'a.b' (from dots) is offered to the model as 'a_b_3': 'a_b' is already taken.",
    ]


def test_a_suffix_never_takes_a_name_that_needed_no_change() -> None:
    tools = {"a.b": entry("a.b", "x"), "a_b": entry("a_b", "y"), "a_b_2": entry("a_b_2", "z")}
    result = declare_tools(tools, supports_tools=True, strict=True)
    assert {t.entry["tool_id"]: t.name for t in result.tools} == {
        "y": "a_b",
        "z": "a_b_2",
        "x": "a_b_3",
    }


def test_names_are_made_valid_for_the_api(caplog: pytest.LogCaptureFixture) -> None:
    long = "weather lookup/v2." + "x" * 80
    with caplog.at_level(logging.DEBUG, logger="orpipe.owui"):
        result = declare_tools({long: entry(long, "w")}, supports_tools=True, strict=True)
    (tool,) = result.tools
    assert tool.name.startswith("weather_lookup_v2_") and len(tool.name) == 64
    assert dict(result.renamed) == {tool.name: long}
    assert result.notes == ()
    assert debug_lines(caplog) == [
        f"Tool {long!r} (from w) is offered to the model as {tool.name!r}: tool names may "
        "only hold letters, digits, '_' and '-', at most 64."
    ]


def test_long_names_cut_to_one_prefix_stay_distinct() -> None:
    first, second = "f" * 64 + "_one", "f" * 64 + "_two"
    result = declare_tools(
        {first: entry(first, "a"), second: entry(second, "b")}, supports_tools=True, strict=True
    )
    names = sorted(t.name for t in result.tools)
    assert names == ["f" * 62 + "_2", "f" * 64]
    assert all(len(name) <= 64 for name in names)


tool_keys = st.text(alphabet="ab_. -", min_size=1, max_size=6).filter(str.strip)


@given(st.lists(tool_keys, min_size=1, max_size=8, unique=True), st.randoms())
def test_names_are_valid_unique_and_independent_of_order(keys: list[str], rnd: Any) -> None:
    tools = {key: entry(key, f"t{i}") for i, key in enumerate(keys)}
    result = declare_tools(tools, supports_tools=True, strict=True)
    names = [t.name for t in result.tools]
    assert len(names) == len(set(names)) == len(keys)
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name) for name in names)
    for tool in result.tools:
        key = next(k for k, v in tools.items() if v is tool.entry)
        assert (tool.name == key) == (tool.name not in result.renamed)
        assert result.renamed.get(tool.name, tool.name) == key
    assert result.notes == ()  # renaming is logged, never the user's problem
    shuffled = list(tools.items())
    rnd.shuffle(shuffled)
    again = declare_tools(dict(shuffled), supports_tools=True, strict=True)
    assert [(t.name, t.entry["tool_id"]) for t in again.tools] == [
        (t.name, t.entry["tool_id"]) for t in result.tools
    ]


def test_an_optional_enum_in_list_form_accepts_null() -> None:
    schema = {"type": "object", "properties": {"unit": {"type": ["string"], "enum": ["c", "f"]}}}
    assert strict_schema(schema)["properties"]["unit"] == {
        "type": ["string", "null"],
        "enum": ["c", "f", None],
    }


FREE_FORM = [
    {"type": "object", "additionalProperties": True, "title": "A"},  # pydantic's dict
    {"type": "object", "additionalProperties": {"type": "integer"}},  # dict[str, int]
    {"type": "object"},  # OpenAPI "any object"
    {"type": "object", "patternProperties": {"^x-": {"type": "string"}}},
    {"type": "array", "items": {"type": "object", "additionalProperties": {}}},
]


@pytest.mark.parametrize("free", FREE_FORM)
def test_a_free_form_object_keeps_the_tool_out_of_strict_mode(
    free: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    schema = {"type": "object", "properties": {"env": free}, "required": ["env"]}
    with caplog.at_level(logging.DEBUG, logger="orpipe.owui"):
        result = declare_tools({"run": entry("run", "r", schema)}, supports_tools=True, strict=True)
    (tool,) = result.tools
    assert not tool.strict and tool.parameters == schema
    assert result.notes == ()  # nothing the user can change: logged, not shown
    assert debug_lines(caplog) == [
        "tool 'run' takes a free-form object, which strict tool calling cannot describe: "
        "offered without strict checking"
    ]


# -- Open WebUI's built-in tools -------------------------------------------------------

#: ``__tools__`` entries of three built-in tools, their specs computed by Open WebUI
#: 0.12.4's own code (see the file's ``_about``).
BUILTIN_FILE = Path(__file__).with_name("owui_builtin_tool_specs.json")
BUILTIN: dict[str, dict[str, Any]] = json.loads(BUILTIN_FILE.read_text("utf-8"))["tools"]


def builtin_tools() -> dict[str, dict[str, Any]]:
    return {name: {**copy.deepcopy(e), "callable": print} for name, e in BUILTIN.items()}


@pytest.mark.parametrize("strict", [True, False])
def test_open_webuis_built_in_tools_are_offered_as_open_webui_offers_them(
    strict: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """update_memory, replace_note_content and ask_user take lists of free-form objects:
    no note (the user never chose them and can do nothing), the spec as Open WebUI
    sends it (no strict), one debug line each when strict mode was asked for."""
    with caplog.at_level(logging.DEBUG, logger="orpipe.owui"):
        result = declare_tools(builtin_tools(), supports_tools=True, strict=strict)
    assert result.notes == ()
    assert {t.name for t in result.tools} == set(BUILTIN)
    for tool in result.tools:
        assert not tool.strict
        assert tool.parameters == BUILTIN[tool.name]["spec"]["parameters"]
    logged = debug_lines(caplog)
    if strict:
        assert sorted(logged) == [
            f"tool {name!r} is one of Open WebUI's built-in tools: offered as Open WebUI "
            "offers it, without strict checking"
            for name in sorted(BUILTIN)
        ]
    else:
        assert logged == []


def test_a_built_in_tool_with_a_closed_schema_is_not_made_strict_either() -> None:
    closed = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tool = {**entry("search_notes", "builtin:search_notes", closed), "type": "builtin"}
    result = declare_tools({"search_notes": tool}, supports_tools=True, strict=True)
    assert not result.tools[0].strict and result.tools[0].parameters == closed


def test_the_built_in_specs_match_the_installed_open_webui() -> None:
    """The recorded specs' parameters are those of the functions in the installed
    ``open_webui/tools/builtin.py`` (read as text: importing it needs all of Open WebUI)."""
    found = importlib.util.find_spec("open_webui")
    if found is None or found.origin is None:
        pytest.skip("open-webui is not installed (make owui-lib)")
    source = Path(found.origin).with_name("tools").joinpath("builtin.py").read_text("utf-8")
    functions = {
        node.name: node
        for node in ast.parse(source).body
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
    }
    for name, recorded in BUILTIN.items():
        args = functions[name].args
        names = [a.arg for a in args.args if not a.arg.startswith("__")]
        with_default = {a.arg for a in args.args[len(args.args) - len(args.defaults) :]}
        parameters = recorded["spec"]["parameters"]
        assert list(parameters["properties"]) == names, name
        assert parameters["required"] == [n for n in names if n not in with_default], name


@pytest.mark.parametrize(
    "schema",
    [
        None,  # no parameters: a tool without arguments
        {"type": "object"},
        {"type": "object", "properties": {}},
        {"type": "object", "properties": {"o": {"type": "object", "properties": {}}}},
        {"type": "object", "properties": {"o": {"type": "object", "additionalProperties": False}}},
        WEATHER,
    ],
)
def test_closed_objects_stay_strict(schema: dict[str, Any] | None) -> None:
    result = declare_tools({"t": entry("t", "x", schema)}, supports_tools=True, strict=True)
    assert result.tools[0].strict and result.notes == ()


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


names = st.text("abxy", min_size=1, max_size=2)
leaves = st.one_of(
    st.builds(lambda t: {"type": t}, json_types),
    st.builds(lambda t: {"type": [t]}, json_types),
    st.builds(
        lambda kind, values: {"type": kind, "enum": values},
        st.sampled_from(["string", ["string"]]),
        st.lists(names, min_size=1, max_size=3, unique=True),
    ),
    st.just({"$ref": "#/$defs/X"}),
    st.just({"type": "null"}),
)
rich_schemas = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(
            lambda props, req: {
                "type": "object",
                "properties": props,
                "required": [k for k in props if k in req],
            },
            st.dictionaries(names, children, max_size=3),
            st.sets(names),
        ),
        st.builds(lambda item: {"type": "array", "items": item}, children),
        st.builds(lambda variants: {"anyOf": variants}, st.lists(children, min_size=1, max_size=3)),
    ),
    max_leaves=10,
)


def _accepts_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind is not None:
        typed = kind == "null" or (isinstance(kind, list) and "null" in kind)
        return typed and (None in schema.get("enum", [None]))
    return any(_accepts_null(v) for v in schema.get("anyOf", []))


@given(st.one_of(leaves, rich_schemas), st.booleans())
@example(schema={"type": ["string"], "enum": ["a"]}, required=False)
def test_an_optional_property_of_any_shape_may_be_null(schema: Any, required: bool) -> None:
    top = {"type": "object", "properties": {"p": schema}, "required": ["p"] if required else []}
    original = copy.deepcopy(top)
    strict = strict_schema(top)
    assert top == original
    assert strict_schema(strict) == strict
    for obj in _objects(strict):
        assert obj["additionalProperties"] is False
        assert obj["required"] == list(obj["properties"])
    if not required:
        assert _accepts_null(strict["properties"]["p"])
