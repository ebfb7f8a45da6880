"""What OpenRouter answered with, when it is not the event stream we asked for. Synchronous core.

The fetcher asks for ``text/event-stream``; what comes back can be anything
a proxy, a wrong base URL or a misbehaving server sends. This module
decides, from the headers and the body's first bytes, which of these it is,
and turns each into something a person can act on:

- an event stream (also with no or an odd content type, when the body
  starts like one): framed as usual;
- a JSON body with status 200: OpenRouter's error envelope becomes the
  provider's message and code; a non-streamed response object becomes the
  stream events that would have carried it, so the answer is delivered;
- an HTML page, a redirect, an empty 2xx, an unknown content encoding:
  ``UpstreamNotAStream`` naming what came back and what to check;
- a gzip or deflate body (a proxy that ignores ``Accept-Encoding:
  identity``): decompressed as it arrives, in bounded pieces.

It also recognises the events that end a response (``ends_response``), so
the fetcher can stop reading at once instead of waiting for a connection
that a server leaves open.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from orpipe.actors.event_types import ENDS_RESPONSE
from orpipe.engine.errors import UpstreamNotAStream, UpstreamResponseFailed

__all__ = [
    "BodyKind",
    "Inflater",
    "body_kind",
    "describe_html",
    "ends_response",
    "inflater_for",
    "json_body_events",
    "not_a_stream",
]

BodyKind = Literal["sse", "json", "html", "unknown"]

#: Decompressed output is handed on in pieces of at most this size, so a small
#: compressed chunk (a "zip bomb") never becomes one huge buffer.
_INFLATE_PIECE = 64 * 1024


def body_kind(headers: Mapping[str, str], first_bytes: bytes) -> BodyKind:
    """The body's kind from its content type, or from its first bytes when that says little."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "text/event-stream":
        return "sse"
    if content_type in ("text/html", "application/xhtml+xml"):
        return "html"
    if content_type == "application/json" or content_type.endswith("+json"):
        return "json"
    head = first_bytes.lstrip(b"\xef\xbb\xbf \t\r\n")[:16].lower()
    if head.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<")):
        return "html"
    if head.startswith((b"{", b"[")):
        return "json"
    if not content_type or content_type.startswith("text/"):
        return "sse"  # lenient: a stream served as text/plain, or with no type at all
    return "unknown"


def not_a_stream(
    what: str, status: int, headers: Mapping[str, str], advice: str
) -> UpstreamNotAStream:
    """An error naming what came back: ``what`` (HTTP status, content type): ``advice``."""
    content_type = headers.get("content-type", "").split(";")[0].strip() or "no content type"
    return UpstreamNotAStream(
        f"OpenRouter answered with {what} (HTTP {status}, {content_type}) instead of a stream: "
        f"{advice}"
    )


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def describe_html(page: bytes) -> str:
    """'an HTML page' plus its title when it has one (a proxy's page usually says who it is)."""
    match = _TITLE.search(page)
    if match is None:
        return "an HTML page"
    title = " ".join(match.group(1).decode("utf-8", "replace").split())[:120]
    return f'an HTML page titled "{title}"' if title else "an HTML page"


def redirect_error(status: int, headers: Mapping[str, str]) -> UpstreamNotAStream:
    """A 3xx: where it points (scheme, host and path only: a query may hold a token)."""
    location = headers.get("location", "")
    target = location.split("?")[0].split("#")[0][:200] or "nowhere"
    return UpstreamNotAStream(
        f"OpenRouter answered with a redirect (HTTP {status}) to {target} instead of a stream: "
        "check BASE_URL (it should be https://openrouter.ai/api/v1, or your proxy's exact "
        "address); redirects are not followed because they would re-send the request body."
    )


# -- compressed bodies --------------------------------------------------------


class Inflater:
    """Decompresses a gzip or zlib body chunk by chunk, in bounded pieces."""

    __slots__ = ("_inflate",)

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        data = chunk
        while data:
            piece = self._inflate.decompress(data, _INFLATE_PIECE)
            if piece:
                out.append(piece)
            data = self._inflate.unconsumed_tail
            if not piece and data:
                break  # no progress: let the next chunk complete the input
        return out

    def close(self) -> list[bytes]:
        rest = self._inflate.flush()
        return [rest] if rest else []


def inflater_for(status: int, headers: Mapping[str, str]) -> Inflater | None:
    """An ``Inflater`` for a gzip/deflate body, None for identity; refuses other codings."""
    coding = headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip", "deflate"):
        return Inflater()
    raise not_a_stream(
        f"a body compressed as {coding!r}",
        status,
        headers,
        "orpipe reads gzip and deflate only; a proxy between here and OpenRouter is "
        "probably re-encoding the stream, so let it pass event streams through unchanged.",
    )


def inflate_error(exc: zlib.error) -> UpstreamNotAStream:
    return UpstreamNotAStream(
        f"OpenRouter's compressed answer could not be decompressed ({exc}); a proxy between "
        "here and OpenRouter may be damaging the stream. Retry, and check the proxy if it "
        "keeps happening."
    )


# -- events that end a response -------------------------------------------------


class _Ends(msgspec.Struct):
    type: Any = None
    #: Left undecoded; msgspec cannot combine Raw with None, so "absent" is an empty Raw.
    error: msgspec.Raw = msgspec.Raw(b"")


_decode_ends = msgspec.json.Decoder(_Ends).decode
#: One scan first: almost every event is a delta that contains none of these
#: (``ENDS_RESPONSE``, spelled out with its common prefix factored: this runs per event).
_ENDING_HINT = re.compile(rb'"(?:error|response\.(?:completed|incomplete|failed|done|error))"')


def ends_response(payload: bytes) -> bool:
    """Whether this event ends the response (terminal, typed or untyped error)."""
    if _ENDING_HINT.search(payload) is None:
        return False
    try:
        event = _decode_ends(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return False  # the parser will report it; it ends nothing
    if not isinstance(event.type, str):
        return bytes(event.error) not in (b"", b"null")
    return event.type in ENDS_RESPONSE


# -- JSON bodies with a 2xx status ---------------------------------------------

_encode = msgspec.json.Encoder().encode


def json_body_events(body: bytes, status: int, headers: Mapping[str, str]) -> list[bytes]:
    """The stream events that carry a JSON answer; raises for an error or an unknown shape."""
    try:
        data: Any = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise not_a_stream(
            "a body that is neither a stream nor valid JSON",
            status,
            headers,
            "a proxy between here and OpenRouter may be interfering; check BASE_URL and retry.",
        ) from None
    if isinstance(data, dict) and data.get("error") not in (None, {}):
        raise _error_from_envelope(data["error"], status)
    if isinstance(data, dict) and isinstance(data.get("output"), list):
        return _response_events(data)
    raise not_a_stream(
        "JSON that is neither a response nor an error",
        status,
        headers,
        "check BASE_URL: it should point at OpenRouter's API (…/api/v1).",
    )


def _error_from_envelope(error: Any, status: int) -> UpstreamResponseFailed:
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        metadata = error.get("metadata")
        provider = metadata.get("provider_name") if isinstance(metadata, dict) else None
    else:
        code, message, provider = None, error, None
    detail = str(message or "no reason given")
    if isinstance(provider, str) and provider:
        detail += f" (provider: {provider})"
    if isinstance(code, bool) or not isinstance(code, int | str):
        code = status if status != 200 else None
    error_type = error.get("error_type") if isinstance(error, dict) else None
    return UpstreamResponseFailed(
        code=code, detail=detail, error_type=error_type if isinstance(error_type, str) else None
    )


def _response_events(response: dict[str, Any]) -> list[bytes]:
    """A non-streamed response object as the events a stream would have carried."""
    events: list[Any] = [{"type": "response.created", "response": {"id": response.get("id")}}]
    for index, item in enumerate(response["output"]):
        if not isinstance(item, dict):
            continue
        events.extend(_item_deltas(item, index))
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    status = response.get("status")
    ending = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
        status if isinstance(status, str) else "", "response.completed"
    )
    final = {key: value for key, value in response.items() if key != "output"}
    events.append({"type": ending, "response": final})
    return [_encode(event) for event in events]


def _item_deltas(item: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """The deltas (and annotations) an item's text would have streamed as."""
    out: list[dict[str, Any]] = []
    kind = item.get("type")
    if kind == "message":
        for part_index, part in enumerate(item.get("content") or ()):
            if not isinstance(part, dict):
                continue
            text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
            if isinstance(text, str) and text:
                delta = "response.output_text.delta"
                if part.get("type") == "refusal":
                    delta = "response.refusal.delta"
                out.append({"type": delta, "output_index": index, "delta": text})
            for annotation in part.get("annotations") or ():
                out.append(
                    {
                        "type": "response.output_text.annotation.added",
                        "output_index": index,
                        "content_index": part_index,
                        "annotation": annotation,
                    }
                )
    elif kind == "reasoning":
        for summary_index, part in enumerate(item.get("summary") or ()):
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and text:
                out.append(
                    {
                        "type": "response.reasoning_summary_part.added",
                        "output_index": index,
                        "summary_index": summary_index,
                    }
                )
                out.append(
                    {
                        "type": "response.reasoning_summary_text.delta",
                        "output_index": index,
                        "summary_index": summary_index,
                        "delta": text,
                    }
                )
    return out
