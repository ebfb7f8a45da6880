"""RetryPolicy, parse_retry_after and http_error_from_response."""

from __future__ import annotations

import email.utils
import json
import random

import pytest

from orpipe.actors.retry_policy import RetryPolicy, http_error_from_response, parse_retry_after
from orpipe.engine.config import EngineConfig
from orpipe.engine.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamResponseFailed,
    UpstreamTimeout,
)

POLICY = RetryPolicy(attempts=5, backoff_initial_s=0.5, backoff_max_s=4.0, retry_after_cap_s=30.0)
NOW = 1_700_000_000.0


def _http(status: int, retry_after_s: float | None = None) -> UpstreamHTTPError:
    kind = UpstreamRateLimited if status == 429 else UpstreamHTTPError
    return kind(status, code=status, detail="x", retry_after_s=retry_after_s)


def test_from_config() -> None:
    config = EngineConfig(
        retry_attempts=7,
        retry_backoff_initial_s=0.25,
        retry_backoff_max_s=8,
        retry_after_cap_s=12,
    )
    assert RetryPolicy.from_config(config) == RetryPolicy(
        attempts=7, backoff_initial_s=0.25, backoff_max_s=8, retry_after_cap_s=12
    )


@pytest.mark.parametrize("seed", range(20))
def test_backoff_grows_with_jitter_inside_its_bounds(seed: int) -> None:
    rng = random.Random(seed)
    error = UpstreamConnectError("refused")
    delays = []
    for retries_done in range(POLICY.attempts):
        backoff = min(4.0, 0.5 * 2**retries_done)
        delay = POLICY.delay(retries_done, error, rng)
        assert delay is not None
        assert backoff / 2 <= delay <= backoff  # equal jitter: never below half
        delays.append(delay)
    assert max(delays) <= POLICY.backoff_max_s
    # The floor doubles until the cap: later waits are never shorter than the
    # first one's ceiling.
    assert delays[2] >= 1.0 and delays[3] >= 2.0 and delays[4] >= 2.0


def test_jitter_is_driven_by_the_rng() -> None:
    error = UpstreamTimeout("read", 1.0)
    first = [POLICY.delay(i, error, random.Random(3)) for i in range(4)]
    again = [POLICY.delay(i, error, random.Random(3)) for i in range(4)]
    other = [POLICY.delay(i, error, random.Random(4)) for i in range(4)]
    assert first == again
    assert first != other


def test_attempts_cap() -> None:
    rng = random.Random(0)
    error = _http(503)
    assert POLICY.delay(4, error, rng) is not None
    assert POLICY.delay(5, error, rng) is None
    assert POLICY.delay(6, error, rng) is None
    none = RetryPolicy(attempts=0, backoff_initial_s=1, backoff_max_s=1, retry_after_cap_s=1)
    assert none.delay(0, error, rng) is None


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_non_retryable_statuses(status: int) -> None:
    assert POLICY.delay(0, _http(status), random.Random(0)) is None


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 524, 529])
def test_retryable_statuses(status: int) -> None:
    assert POLICY.delay(0, _http(status), random.Random(0)) is not None


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (UpstreamTimeout("connect", 10), True),
        (UpstreamConnectError("dns"), True),
        (UpstreamProtocolError("cut"), True),
        (UpstreamResponseFailed(code="server_error", detail="x"), False),
    ],
)
def test_other_upstream_errors(error: UpstreamError, retry: bool) -> None:
    assert (POLICY.delay(0, error, random.Random(0)) is not None) is retry


def test_retry_after_within_the_cap_is_honoured() -> None:
    delay = POLICY.delay(0, _http(429, retry_after_s=12.5), random.Random(0))
    assert delay == 12.5  # longer than the backoff: the server's wish wins
    assert POLICY.delay(0, _http(503, retry_after_s=30.0), random.Random(0)) == 30.0


def test_short_retry_after_does_not_shorten_the_backoff() -> None:
    delay = POLICY.delay(3, _http(429, retry_after_s=0.1), random.Random(0))
    assert delay is not None and delay >= 2.0


def test_retry_after_beyond_the_cap_gives_up() -> None:
    assert POLICY.delay(0, _http(429, retry_after_s=30.001), random.Random(0)) is None
    assert POLICY.delay(0, _http(503, retry_after_s=3600), random.Random(0)) is None


# --- parse_retry_after -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("7", 7.0), (" 7 ", 7.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0)],
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date() -> None:
    value = email.utils.formatdate(NOW + 20, usegmt=True)
    assert value.endswith("GMT")
    assert parse_retry_after(value, NOW) == pytest.approx(20.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0  # in the past


@pytest.mark.parametrize("value", [None, "", "soon", "Wed, 99 Foo 2015"])
def test_retry_after_garbage(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# --- http_error_from_response ------------------------------------------------


def test_envelope_with_int_code() -> None:
    body = json.dumps({"error": {"code": 402, "message": "Insufficient credits"}}).encode()
    error = http_error_from_response(402, body, {}, NOW)
    assert type(error) is UpstreamHTTPError
    assert (error.status, error.code, error.detail) == (402, 402, "Insufficient credits")
    assert error.retry_after_s is None
    assert not error.retryable
    assert "402" in error.message and "Insufficient credits" in error.message


def test_envelope_with_string_code() -> None:
    body = json.dumps(
        {"error": {"code": "invalid_prompt", "message": "bad input"}, "metadata": None}
    ).encode()
    error = http_error_from_response(400, body, {}, NOW)
    assert (error.code, error.detail) == ("invalid_prompt", "bad input")
    assert not error.retryable


def test_rate_limited_with_retry_after_header() -> None:
    body = json.dumps({"error": {"code": 429, "message": "Rate limit exceeded"}}).encode()
    error = http_error_from_response(429, body, {"retry-after": "7"}, NOW)
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after_s == 7.0
    assert error.retryable
    assert "retry in 7 s" in error.message


def test_retry_after_as_http_date_header() -> None:
    headers = {"retry-after": email.utils.formatdate(NOW + 90, usegmt=True)}
    error = http_error_from_response(503, b"", headers, NOW)
    assert error.retry_after_s == pytest.approx(90.0)
    assert error.retryable


def test_non_json_body() -> None:
    error = http_error_from_response(502, b"Bad Gateway", {}, NOW)
    assert error.code is None
    assert error.detail == "Bad Gateway"
    assert error.retryable


def test_an_html_body_is_named_not_quoted() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><hr>nginx</body></html>"
    error = http_error_from_response(502, page, {}, NOW)
    assert error.detail == (
        'an HTML page titled "502 Bad Gateway" (a proxy may be answering for OpenRouter)'
    )
    assert error.retryable


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe\xfd",
        b"[]",
        b'{"error": "just a string"}',
        b'{"error": {"code": [1], "message": null}}',
        b'{"error": {"code": 1.5}}',
    ],
)
def test_odd_bodies_never_crash(body: bytes) -> None:
    error = http_error_from_response(500, body, {}, NOW)
    assert error.status == 500
    assert error.code is None
    assert error.retryable


def test_long_body_is_cut() -> None:
    error = http_error_from_response(500, b"x" * 10_000, {}, NOW)
    assert len(error.detail) <= 500
    long_message = json.dumps({"error": {"code": 500, "message": "m" * 5000}}).encode()
    assert len(http_error_from_response(500, long_message, {}, NOW).detail) == 500
