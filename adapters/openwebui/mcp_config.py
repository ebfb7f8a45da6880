"""``REMOTE_MCP_SERVERS_JSON``: remote MCP servers offered to the model as ``mcp`` tools.

The valve holds one JSON object or a list of them (at most 1 MB). Each
server becomes its own ``{"type": "mcp", ...}`` tool entry — several servers
are never merged into one because they share a type (the original's bug,
seed §K.2.25). Per server:

* allowed keys: ``server_label``, ``server_url``, ``require_approval``,
  ``allowed_tools``, ``headers``; any other key is an error (a typo must not
  silently drop a setting);
* ``server_url``: ``http``, ``https``, ``ws`` or ``wss`` with a host;
* ``server_label``: required shape ``[A-Za-z0-9_-]{1,64}``; when missing it is
  made from the URL's host; duplicate labels get ``_2``, ``_3``, … in order
  (cut so they stay within 64 characters);
* ``headers``: an object of HTTP header names (RFC 9110 tokens) to text
  values without line breaks (a line break would smuggle in another
  header). Header values are secrets (API keys): they never appear in an
  error message;
* ``require_approval``: ``"always"`` or ``"never"`` (any case), or an object
  that is passed on as it is.

``parse_mcp_servers`` raises ``McpConfigError`` naming the server (by
position) and what to fix.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

import msgspec

from orpipe.adapters.openwebui.tool_specs import unique_name

__all__ = ["MAX_MCP_JSON_BYTES", "McpConfigError", "parse_mcp_servers"]

MAX_MCP_JSON_BYTES = 1024 * 1024
_ALLOWED_KEYS = frozenset(
    {"server_label", "server_url", "require_approval", "allowed_tools", "headers"}
)
_SCHEMES = frozenset({"http", "https", "ws", "wss"})
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_-]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_APPROVALS = frozenset({"always", "never"})


class McpConfigError(ValueError):
    """REMOTE_MCP_SERVERS_JSON cannot be used; the message says what to fix."""

    def __init__(self, problem: str) -> None:
        self.message = f"REMOTE_MCP_SERVERS_JSON: {problem}"
        super().__init__(self.message)


def parse_mcp_servers(text: str | None) -> tuple[dict[str, Any], ...]:
    """The ``mcp`` tool entries the valve describes; () when it is empty."""
    if text is None or not text.strip():
        return ()
    if len(text.encode("utf-8")) > MAX_MCP_JSON_BYTES:
        raise McpConfigError(f"the value is larger than {MAX_MCP_JSON_BYTES:,} bytes")
    try:
        raw = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise McpConfigError(f"the value is not valid JSON ({exc})") from None
    if not isinstance(raw, list | dict):
        raise McpConfigError(
            f"the value must be a JSON object or a list of objects, not {_json_kind(raw)}"
        )
    servers = raw if isinstance(raw, list) else [raw]
    labels: set[str] = set()
    out = []
    for position, server in enumerate(servers, start=1):
        entry = _server(server, position)
        entry["server_label"] = unique_name(entry["server_label"], labels)
        labels.add(entry["server_label"])
        out.append(entry)
    return tuple(out)


def _server(server: object, position: int) -> dict[str, Any]:
    where = f"server {position}"
    if not isinstance(server, Mapping):
        raise McpConfigError(f"{where} must be a JSON object, not {_json_kind(server)}")
    unknown = sorted(str(k) for k in server if k not in _ALLOWED_KEYS)
    if unknown:
        raise McpConfigError(
            f"{where} has unknown key(s) {', '.join(unknown)}; allowed: "
            + ", ".join(sorted(_ALLOWED_KEYS))
        )
    url = server.get("server_url")
    if not isinstance(url, str) or not url.strip():
        raise McpConfigError(f"{where} needs a server_url")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
        raise McpConfigError(
            f"{where}: server_url must be an http, https, ws or wss URL with a host"
        )
    entry: dict[str, Any] = {"type": "mcp", "server_url": url.strip()}
    label = server.get("server_label")
    if label is None:
        label = _LABEL_BAD.sub("_", parts.hostname)[:64]
    if not isinstance(label, str) or not _LABEL.match(label):
        raise McpConfigError(f"{where}: server_label must be 1-64 letters, digits, '_' or '-'")
    entry["server_label"] = label
    headers = server.get("headers")
    if headers is not None:
        entry["headers"] = _headers(headers, where)
    approval = server.get("require_approval")
    if approval is not None:
        if isinstance(approval, str) and approval.strip().lower() in _APPROVALS:
            approval = approval.strip().lower()
        elif not isinstance(approval, Mapping):
            raise McpConfigError(
                f'{where}: require_approval must be "always", "never" or an object'
            )
        entry["require_approval"] = approval
    allowed = server.get("allowed_tools")
    if allowed is not None:
        if not isinstance(allowed, list) or not all(isinstance(t, str) for t in allowed):
            raise McpConfigError(f"{where}: allowed_tools must be a list of tool names")
        entry["allowed_tools"] = list(allowed)
    return entry


def _headers(headers: object, where: str) -> dict[str, str]:
    # The values are secrets: messages name the header, never its value.
    if not isinstance(headers, Mapping):
        raise McpConfigError(f"{where}: headers must be an object of header names to text")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise McpConfigError(
                f"{where}: {str(name)[:40]!r} is not a valid HTTP header name "
                "(letters, digits and !#$%&'*+.^_`|~-)"
            )
        if not isinstance(value, str):
            raise McpConfigError(f"{where}: the value of header {name!r} must be text")
        if any(ch in value for ch in "\r\n\0"):
            raise McpConfigError(
                f"{where}: the value of header {name!r} contains a line break or NUL"
            )
        checked[name] = value
    return checked


def _json_kind(value: object) -> str:
    """How a person writing JSON calls this value."""
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "text"}
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    return kinds.get(type(value), type(value).__name__)
