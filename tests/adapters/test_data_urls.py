"""Inline attachments: size known before decoding, strict base64, readable data URLs."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orpipe.adapters.openwebui.data_urls import (
    AttachmentError,
    decode_base64,
    decoded_size,
    parse_data_url,
)

MB = 1024 * 1024


@given(st.binary(max_size=2048), st.booleans(), st.booleans())
def test_the_size_is_exact_before_decoding(data: bytes, wrap: bool, unpadded: bool) -> None:
    text = base64.b64encode(data).decode()
    if unpadded:
        text = text.rstrip("=")
    if wrap:
        text = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decoded_size(text) == len(data)
    assert decode_base64(text, limit_bytes=len(data)) == data


@given(st.binary(max_size=512))
def test_url_safe_base64_is_accepted(data: bytes) -> None:
    assert decode_base64(base64.urlsafe_b64encode(data).decode(), limit_bytes=MB) == data


@given(st.binary(min_size=1, max_size=512))
def test_one_byte_over_the_limit_is_refused_without_decoding(data: bytes) -> None:
    with pytest.raises(AttachmentError, match="over the"):
        decode_base64(base64.b64encode(data).decode(), limit_bytes=len(data) - 1)


@pytest.mark.parametrize("bad", ["abc$", "a", "ab=c", "====", "abcd=====", "ab c!d", "ÿÿÿÿ"])
def test_invalid_base64_is_a_clear_error(bad: str) -> None:
    with pytest.raises(AttachmentError, match="not valid base64"):
        decode_base64(bad, limit_bytes=MB)


def test_a_huge_payload_is_refused_by_its_length_alone() -> None:
    text = "A" * (60 * MB)  # 45 MB once decoded
    with pytest.raises(AttachmentError, match=r"45 MB, over the 10 MB limit"):
        decode_base64(text, limit_bytes=10 * MB, what="image 2")


@pytest.mark.parametrize(
    ("url", "media_type"),
    [
        ("data:image/png;base64,iVBORw0KGgo=", "image/png"),
        ("DATA:Image/JPG;base64,/9j/4AAQ", "image/jpeg"),
        ("data:audio/mp3;base64,SUQz", "audio/mpeg"),
        ("data:application/pdf;name=a.pdf;base64,JVBERi0=", "application/pdf"),
        ("data:;base64,aGk=", "text/plain"),
    ],
)
def test_data_urls_are_read(url: str, media_type: str) -> None:
    parsed = parse_data_url(url, limit_bytes=MB)
    assert parsed.media_type == media_type
    assert parsed.data == base64.b64decode(url.split(",", 1)[1] + "==")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://example.com/a.png", "not a data: URL"),
        ("data:image/png;base64", "without data"),
        ("data:image/png,rawbytes", "not base64-encoded"),
        ("data:not a type;base64,aGk=", "unreadable media type"),
        ("data:image/png;base64,@@@@", "not valid base64"),
    ],
)
def test_malformed_data_urls_say_why(url: str, reason: str) -> None:
    with pytest.raises(AttachmentError, match=reason):
        parse_data_url(url, limit_bytes=MB, what="image 1")


def test_the_error_names_the_attachment() -> None:
    with pytest.raises(AttachmentError) as caught:
        parse_data_url("data:image/png;base64,%%", limit_bytes=MB, what="image 3")
    assert caught.value.reason.startswith("image 3 ")
