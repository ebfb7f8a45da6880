"""REMOTE_MCP_SERVERS_JSON: each server its own mcp tool, validated, secrets kept out."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpipe.adapters.openwebui.mcp_config import (
    MAX_MCP_JSON_BYTES,
    McpConfigError,
    parse_mcp_servers,
)


def test_one_object_or_a_list() -> None:
    one = {"server_label": "docs", "server_url": "https://mcp.example.com/sse"}
    assert parse_mcp_servers(json.dumps(one)) == ({"type": "mcp", **one},)
    two = [one, {"server_label": "git", "server_url": "wss://git.example.com/mcp"}]
    assert [s["server_label"] for s in parse_mcp_servers(json.dumps(two))] == ["docs", "git"]


def test_several_servers_are_never_merged_and_labels_stay_unique() -> None:
    servers = [
        {"server_url": "https://a.example.com"},
        {"server_url": "https://a.example.com/other"},
        {"server_label": "x", "server_url": "http://b.example.com"},
        {"server_label": "x", "server_url": "ws://c.example.com"},
    ]
    parsed = parse_mcp_servers(json.dumps(servers))
    assert [s["server_label"] for s in parsed] == [
        "a_example_com",
        "a_example_com_2",
        "x",
        "x_2",
    ]
    assert all(s["type"] == "mcp" for s in parsed)


def test_optional_keys_are_kept() -> None:
    server = {
        "server_label": "docs",
        "server_url": "https://mcp.example.com",
        "require_approval": "never",
        "allowed_tools": ["search"],
        "headers": {"Authorization": "Bearer s3cret"},
    }
    assert parse_mcp_servers(json.dumps(server))[0] == {"type": "mcp", **server}


@pytest.mark.parametrize("blank", [None, "", "   "])
def test_blank_means_none(blank: str | None) -> None:
    assert parse_mcp_servers(blank) == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("{", "not valid JSON"),
        ('"text"', "the value must be a JSON object or a list of objects, not text"),
        ("null", "the value must be a JSON object or a list of objects, not null"),
        ("[1]", "server 1 must be a JSON object, not a number"),
        ("[[]]", "server 1 must be a JSON object, not a list"),
        ('{"server_url": "https://a.b", "token": "x"}', "unknown key(s) token"),
        ('{"server_label": "a"}', "needs a server_url"),
        ('{"server_url": "ftp://a.b"}', "http, https, ws or wss URL with a host"),
        ('{"server_url": "https://"}', "with a host"),
        ('{"server_url": "https://a.b", "server_label": "bad label!"}', "server_label must be"),
        ('{"server_url": "https://a.b", "allowed_tools": "search"}', "allowed_tools must be"),
        ('{"server_url": "https://a.b", "require_approval": 3}', "require_approval must be"),
        ('{"server_url": "https://a.b", "require_approval": "nevr"}', '"always", "never"'),
        ('{"server_url": "https://a.b", "headers": ["x"]}', "headers must be an object"),
        ('{"server_url": "https://a.b", "headers": {"Bad Name": "v"}}', "'Bad Name' is not"),
        ('[{"server_url": "https://a.b"}, {"server_url": "gopher://x"}]', "server 2:"),
    ],
)
def test_problems_say_what_to_fix(value: str, problem: str) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse_mcp_servers(value)
    assert problem in caught.value.message
    assert caught.value.message.startswith("REMOTE_MCP_SERVERS_JSON: ")


def test_header_values_never_appear_in_errors() -> None:
    value = json.dumps(
        {"server_url": "https://a.b", "headers": {"Authorization": 12345, "X-Key": "sk-hidden"}}
    )
    with pytest.raises(McpConfigError) as caught:
        parse_mcp_servers(value)
    assert "sk-hidden" not in str(caught.value) and "12345" not in str(caught.value)


def test_size_limit() -> None:
    big = json.dumps({"server_url": "https://a.b", "allowed_tools": ["x" * MAX_MCP_JSON_BYTES]})
    with pytest.raises(McpConfigError, match="larger than"):
        parse_mcp_servers(big)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"Authorization": 12345}, "the value of header 'Authorization' must be text"),
        ({"X-Key": "sk-hidden\r\nX-Evil: 1"}, "header 'X-Key' contains a line break"),
        ({"X-Key": "sk-hidden\n"}, "header 'X-Key' contains a line break"),
    ],
)
def test_bad_header_values_are_named_by_header_never_shown(
    headers: dict[str, object], problem: str
) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse_mcp_servers(json.dumps({"server_url": "https://a.b", "headers": headers}))
    assert problem in caught.value.message
    assert "sk-hidden" not in caught.value.message and "12345" not in caught.value.message


def test_approval_words_in_any_case_and_objects_are_kept() -> None:
    server = {"server_url": "https://a.b", "require_approval": " Never "}
    assert parse_mcp_servers(json.dumps(server))[0]["require_approval"] == "never"
    rule = {"never": {"tool_names": ["search"]}}
    server = {"server_url": "https://a.b", "require_approval": rule}
    assert parse_mcp_servers(json.dumps(server))[0]["require_approval"] == rule


def test_an_empty_list_means_no_servers() -> None:
    assert parse_mcp_servers("[]") == ()


def test_many_duplicates_keep_labels_within_64_characters() -> None:
    label = "x" * 64
    servers = [{"server_label": label, "server_url": "https://a.b"}] * 1001
    labels = [s["server_label"] for s in parse_mcp_servers(json.dumps(servers))]
    assert len(set(labels)) == 1001
    assert all(len(lab) <= 64 for lab in labels)
    assert labels[-1] == "x" * 59 + "_1001"


hosts = st.sampled_from(["a.example.com", "b.example.com", "10.0.0.1", "[::1]"])
servers = st.lists(
    st.builds(
        lambda scheme, host, label: (
            {"server_url": f"{scheme}://{host}/mcp"}
            | ({} if label is None else {"server_label": label})
        ),
        st.sampled_from(["http", "https", "ws", "wss", "HTTPS"]),
        hosts,
        st.none() | st.text(alphabet="ab_-", min_size=1, max_size=5),
    ),
    max_size=8,
)


@given(servers)
def test_every_server_is_its_own_entry_with_a_unique_valid_label(
    given_servers: list[dict[str, str]],
) -> None:
    parsed = parse_mcp_servers(json.dumps(given_servers))
    assert len(parsed) == len(given_servers)
    assert [s["server_url"] for s in parsed] == [s["server_url"] for s in given_servers]
    labels = [s["server_label"] for s in parsed]
    assert len(set(labels)) == len(labels)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", lab) for lab in labels)
    assert all(s["type"] == "mcp" for s in parsed)
    # The first server with a label keeps it as given.
    for server, entry in zip(given_servers, parsed, strict=True):
        if "server_label" in server and server["server_label"] not in labels[: parsed.index(entry)]:
            assert entry["server_label"] == server["server_label"]
