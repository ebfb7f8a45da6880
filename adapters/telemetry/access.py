"""Who may read the telemetry: the bearer token check, and reading a request header. No I/O.

The telemetry server asks ``bearer_matches`` on every HTTP request and
WebSocket handshake. Without a token (a loopback server) everyone may; with
one, only a request carrying ``Authorization: Bearer <token>``. The compare
takes the same time however much of the token is right, so the answer's
timing does not leak it. The token itself appears in no message.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

__all__ = ["UNAUTHORIZED", "bearer_matches", "header"]

#: The 401 body: what is missing and where the token is set, never the token.
UNAUTHORIZED = (
    "This telemetry server needs its bearer token: send the header "
    "'Authorization: Bearer <TELEMETRY_TOKEN>' (the Function's TELEMETRY_TOKEN valve)."
)


def bearer_matches(headers: Sequence[tuple[bytes, bytes]], token: str | None) -> bool:
    """No token asked for, or the request's bearer credentials are the token."""
    if not token:
        return True
    scheme, _, credentials = (header(headers, b"authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case), as Latin-1 text; None if absent."""
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None
