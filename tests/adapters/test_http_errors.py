"""The one httpx translator: every httpx exception sorts into a kind, and is chained."""

from __future__ import annotations

import httpx
import pytest

from orpipe.adapters.openrouter.http_errors import (
    HttpFailure,
    classify,
    describe,
    translate_httpx_errors,
)

REQUEST = httpx.Request("GET", "https://openrouter.ai/api/v1/models")


@pytest.mark.parametrize(
    ("exc", "kind", "phase"),
    [
        (httpx.ConnectTimeout("slow"), "timeout", "connect"),
        (httpx.PoolTimeout("full"), "timeout", "pool"),
        (httpx.WriteTimeout("stuck"), "timeout", "write"),
        (httpx.ReadTimeout("quiet"), "timeout", "read"),
        (httpx.ConnectError("refused"), "network", None),
        (httpx.ReadError("reset"), "network", None),
        (httpx.UnsupportedProtocol("ftp"), "bad_url", None),
        (httpx.InvalidURL("no host"), "bad_url", None),
        (httpx.RemoteProtocolError("garbage"), "protocol", None),
        (httpx.DecodingError("bad gzip"), "protocol", None),
        (httpx.StreamClosed(), "protocol", None),
    ],
)
def test_each_httpx_error_has_a_kind(exc: Exception, kind: str, phase: str | None) -> None:
    failure = classify(exc)
    assert (failure.kind, failure.phase, failure.name) == (kind, phase, type(exc).__name__)


def test_the_block_raises_what_the_caller_builds_chained_to_the_original() -> None:
    seen: list[HttpFailure] = []

    def to(failure: HttpFailure) -> LookupError:
        seen.append(failure)
        return LookupError(failure.detail)

    original = httpx.ConnectError("connection refused", request=REQUEST)
    refused = pytest.raises(LookupError, match="ConnectError: connection refused")
    with refused as caught, translate_httpx_errors(to):
        raise original
    assert caught.value.__cause__ is original
    assert [f.kind for f in seen] == ["network"]


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), translate_httpx_errors(LookupError):
        raise KeyError("not httpx")


def test_a_description_is_one_short_line() -> None:
    assert describe(httpx.ReadError("")) == "ReadError"
    text = describe(httpx.ReadError("line one\n  line two " + "x" * 400))
    assert text.startswith("ReadError: line one line two ")
    assert len(text) == len("ReadError: ") + 200
