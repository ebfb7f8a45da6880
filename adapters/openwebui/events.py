"""The events Open WebUI's ``__event_emitter__`` takes: statuses, notifications, sources.

This module owns their shapes (plain dicts, built synchronously) and the one
clean-up citations need (``strip_openai_utm``). What Open WebUI does with each
event, and why the shapes are as they are: docs/open-webui-notes.md, "Sources
and statuses on the socket".
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "log_source_event",
    "notification_event",
    "source_event",
    "status_event",
    "strip_openai_utm",
]

_OPENAI_UTM = "utm_source=openai"


def status_event(description: str, *, done: bool, **extra: Any) -> dict[str, Any]:
    """A ``status`` event; extra keys (``action``, ``queries``, ...) go into its data."""
    return {"type": "status", "data": {"description": description, "done": done, **extra}}


def notification_event(
    kind: Literal["info", "success", "warning", "error"], content: str
) -> dict[str, Any]:
    """A toast in the browser (not stored with the chat)."""
    return {"type": "notification", "data": {"type": kind, "content": content}}


def log_source_event(request_id: str, lines: list[str]) -> dict[str, Any]:
    """A failed request's log lines as a source under the answer (the original pipe
    claimed to do this and never did, seed inventory §I)."""
    source_id = f"orpipe-log-{request_id}"
    return {
        "type": "source",
        "data": {
            "source": {"name": f"Request log {request_id}", "id": source_id},
            "document": ["\n".join(lines)],
            "metadata": [{"source": source_id, "name": f"orpipe request log ({len(lines)} lines)"}],
        },
    }


def source_event(url: str, title: str, *, accessed: str) -> dict[str, Any]:
    """A ``source`` event for one cited web page (inventory §C, contract §2.9)."""
    name = title or url
    return {
        "type": "source",
        "data": {
            "source": {"name": _site_name(url), "url": url},
            "document": [name],
            "metadata": [{"source": url, "name": name, "date_accessed": accessed}],
        },
    }


def strip_openai_utm(url: str) -> str:
    """The URL without the ``utm_source=openai`` that web-search citations append.

    The same page is often cited with and without it; removing the pair
    (wherever it sits in the query) makes both one source.
    """
    if _OPENAI_UTM not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed URL from upstream must not break the answer
        return url
    query = "&".join(pair for pair in parts.query.split("&") if pair != _OPENAI_UTM)
    return urlunsplit(parts._replace(query=query))


def _site_name(url: str) -> str:
    """The host without a leading ``www.`` *prefix* (the original's lstrip ate letters)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return url
    return host.removeprefix("www.") if host else url
