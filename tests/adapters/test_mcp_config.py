"""REMOTE_MCP_SERVERS_JSON: each server its own mcp tool, validated, secrets kept out."""

from __future__ import annotations

import json

import pytest

from adapters.mcp_config import MAX_MCP_JSON_BYTES, McpConfigError, parse_mcp_servers


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
        ('"text"', "must be a JSON object"),
        ("[1]", "server 1 must be a JSON object"),
        ('{"server_url": "https://a.b", "token": "x"}', "unknown key(s) token"),
        ('{"server_label": "a"}', "needs a server_url"),
        ('{"server_url": "ftp://a.b"}', "http, https, ws or wss URL with a host"),
        ('{"server_url": "https://"}', "with a host"),
        ('{"server_url": "https://a.b", "server_label": "bad label!"}', "server_label must be"),
        ('{"server_url": "https://a.b", "allowed_tools": "search"}', "allowed_tools must be"),
        ('{"server_url": "https://a.b", "require_approval": 3}', "require_approval must be"),
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
