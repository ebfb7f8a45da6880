"""The artifact codec: round trips for every flag combination, the byte format,
clear errors for bad rows and short keys, and the namespace."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re

import lz4.frame
import pytest
from cryptography.fernet import Fernet, InvalidToken
from hypothesis import given
from hypothesis import strategies as st

from orpipe.adapters.store import codec as artifact_codec
from orpipe.adapters.store.codec import ArtifactCodec, EncryptionKeyError, namespace_fragment
from orpipe.adapters.store.rows import StoredRow
from orpipe.engine.artifacts import Artifact
from orpipe.engine.errors import ArtifactDecodeError, ConfigError, PersistenceError
from orpipe.engine.messages import thaw_json

KEY = "correct horse battery staple 42"
OTHER_KEY = "another long random passphrase"
SECRET_TEXT = "TOP-SECRET-REASONING"

# Every combination of the codec's flags (min_compress_bytes: always, sometimes, never).
CODECS = [
    ArtifactCodec(key, encrypt_all=encrypt_all, lz4=lz4, min_compress_bytes=minimum)
    for key, encrypt_all, lz4, minimum in itertools.product(
        [None, KEY], [False, True], [False, True], [0, 64, 1 << 20]
    )
]
ITEM_TYPES = ["reasoning", "Reasoning", "REASONING", "function_call", "function_call_output"]

# Text with everything Unicode has, lone surrogates included (JSON parsers produce them
# from "\ud800" escapes, so payloads can hold them; the codec must keep them). A high
# half directly followed by a low half is left out: no JSON decoder produces that pair
# of code points (it decodes "\ud800\udc00" as the one character U+10000), and JSON
# cannot carry it apart from that character.
_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")
any_text = st.text(
    alphabet=st.characters(categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cs"]), max_size=40
).filter(lambda text: _PAIR.search(text) is None)
json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text | st.text()
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(any_text, json_values, max_size=5)


def artifact(
    payload: object = None, *, item_type: str = "reasoning", artifact_id: str | None = None
) -> Artifact:
    extra = {"artifact_id": artifact_id} if artifact_id else {}
    return Artifact(
        chat_id="chat-1",
        message_id="msg-1",
        item_type=item_type,
        payload={"text": SECRET_TEXT} if payload is None else payload,  # type: ignore[arg-type]
        model_id="openai/o4",
        user_id="user-1",
        **extra,  # type: ignore[arg-type]
    )


def plain_row(blob: bytes, *, item_type: str = "function_call") -> StoredRow:
    return StoredRow(
        artifact_id="01ARTIFACTID00000000",
        chat_id="c",
        message_id="m",
        item_type=item_type,
        model_id=None,
        user_id=None,
        created_at=1.0,
        blob=blob,
        is_encrypted=False,
    )


def with_blob(row: StoredRow, blob: bytes, *, encrypted: bool | None = None) -> StoredRow:
    return StoredRow(
        artifact_id=row.artifact_id,
        chat_id=row.chat_id,
        message_id=row.message_id,
        item_type=row.item_type,
        model_id=row.model_id,
        user_id=row.user_id,
        created_at=row.created_at,
        blob=blob,
        is_encrypted=row.is_encrypted if encrypted is None else encrypted,
    )


def decode_error(codec: ArtifactCodec, row: StoredRow) -> ArtifactDecodeError:
    with pytest.raises(ArtifactDecodeError) as caught:
        codec.decode(row)
    error = caught.value
    assert error.artifact_id == row.artifact_id
    assert row.artifact_id in str(error)
    assert SECRET_TEXT not in str(error)
    assert KEY not in str(error)
    assert OTHER_KEY not in str(error)
    return error


def compact_json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# -- round trips -----------------------------------------------------------------------


@given(
    codec=st.sampled_from(CODECS),
    item_type=st.sampled_from(ITEM_TYPES),
    payload=payloads,
)
def test_every_flag_combination_round_trips(
    codec: ArtifactCodec, item_type: str, payload: dict[str, object]
) -> None:
    original = artifact(payload, item_type=item_type)
    row = codec.encode(original)
    should_encrypt = codec.has_key and (codec.encrypt_all or item_type.lower() == "reasoning")
    assert row.is_encrypted is should_encrypt
    assert (row.artifact_id, row.chat_id, row.message_id, row.item_type) == (
        original.artifact_id,
        original.chat_id,
        original.message_id,
        original.item_type,
    )
    assert (row.model_id, row.user_id, row.created_at) == (
        original.model_id,
        original.user_id,
        original.created_at,
    )
    decoded = codec.decode(row)
    assert decoded == original
    assert thaw_json(decoded.payload) == thaw_json(original.payload)


@given(payload=payloads, item_type=st.sampled_from(ITEM_TYPES))
def test_a_new_codec_with_the_same_key_reads_the_rows(
    payload: dict[str, object], item_type: str
) -> None:
    row = ArtifactCodec(KEY, encrypt_all=True).encode(artifact(payload, item_type=item_type))
    assert ArtifactCodec(KEY).decode(row).payload == artifact(payload).payload


@given(blob=st.binary(max_size=200), encrypted=st.booleans(), codec=st.sampled_from(CODECS))
def test_arbitrary_bytes_never_crash_the_decoder(
    blob: bytes, encrypted: bool, codec: ArtifactCodec
) -> None:
    row = with_blob(plain_row(b""), blob, encrypted=encrypted)
    try:
        codec.decode(row)
    except ArtifactDecodeError as exc:
        assert exc.artifact_id == row.artifact_id


def test_lone_surrogates_survive_and_the_stored_body_stays_valid_utf8() -> None:
    codec = ArtifactCodec(None, lz4=False)
    original = artifact({"text": "a\ud800b", "key\udfff": ["\udbff"]}, item_type="function_call")
    row = codec.encode(original)
    body = row.blob[1:].decode("utf-8")  # strict: no surrogate smuggled into the bytes
    assert "\\ud800" in body
    assert codec.decode(row) == original


def test_non_ascii_text_is_stored_as_utf8_not_escaped() -> None:
    codec = ArtifactCodec(None, lz4=False)
    row = codec.encode(artifact({"text": "héllo ✓ 漢字"}, item_type="function_call"))
    assert row.blob == b"\x10" + compact_json({"text": "héllo ✓ 漢字"})


# -- the byte format ------------------------------------------------------------------


def test_plain_rows_are_compressed_too() -> None:
    payload = {"output": "the same words again and again " * 100}
    row = ArtifactCodec(None).encode(artifact(payload, item_type="function_call_output"))
    assert not row.is_encrypted
    assert row.blob[0] == 0x11  # version 1, LZ4
    assert len(row.blob) < len(compact_json(payload)) // 5
    assert lz4.frame.decompress(row.blob[1:]) == compact_json(payload)


@pytest.mark.parametrize(
    ("lz4_on", "minimum", "payload", "expected_byte"),
    [
        (False, 0, {"output": "x" * 1000}, 0x10),  # compression off
        (True, 10_000, {"output": "x" * 1000}, 0x10),  # below MIN_COMPRESS_BYTES
        (True, 0, {"o": "zq"}, 0x10),  # the frame would be larger
        (True, 1000, {"output": "x" * 1000}, 0x11),  # at least the minimum
    ],
)
def test_compression_only_when_enabled_large_enough_and_smaller(
    lz4_on: bool, minimum: int, payload: dict[str, str], expected_byte: int
) -> None:
    codec = ArtifactCodec(None, lz4=lz4_on, min_compress_bytes=minimum)
    row = codec.encode(artifact(payload, item_type="function_call"))
    assert row.blob[0] == expected_byte
    if expected_byte == 0x10:
        assert row.blob[1:] == compact_json(payload)


def test_encrypted_rows_are_fernet_tokens_of_the_compressed_frame() -> None:
    payload = {"text": SECRET_TEXT * 200}
    row = ArtifactCodec(KEY).encode(artifact(payload))
    assert row.is_encrypted
    assert SECRET_TEXT.encode() not in row.blob
    assert base64.urlsafe_b64decode(row.blob)[0] == 0x80  # Fernet's version byte
    # compressed before encryption: the token is far smaller than the JSON
    assert len(row.blob) < len(compact_json(payload)) // 5


@pytest.mark.parametrize(
    ("encrypt_all", "item_type", "encrypted"),
    [
        (False, "reasoning", True),
        (False, "ReAsOnInG", True),
        (False, "function_call", False),
        (False, "function_call_output", False),
        (True, "function_call", True),
        (True, "function_call_output", True),
    ],
)
def test_what_is_encrypted(encrypt_all: bool, item_type: str, encrypted: bool) -> None:
    codec = ArtifactCodec(KEY, encrypt_all=encrypt_all)
    assert codec.encode(artifact(item_type=item_type)).is_encrypted is encrypted
    assert not ArtifactCodec(None, encrypt_all=True).encode(artifact()).is_encrypted


# -- bad rows -------------------------------------------------------------------------


def test_a_tampered_ciphertext_is_a_decode_error() -> None:
    codec = ArtifactCodec(KEY)
    row = codec.encode(artifact())
    middle = len(row.blob) // 2
    flipped = row.blob[:middle] + bytes([row.blob[middle] ^ 0x01]) + row.blob[middle + 1 :]
    error = decode_error(codec, with_blob(row, flipped))
    assert "wrong key" in str(error) or "altered" in str(error)


def test_the_wrong_key_is_a_decode_error() -> None:
    row = ArtifactCodec(KEY).encode(artifact())
    error = decode_error(ArtifactCodec(OTHER_KEY), row)
    assert "decryption failed" in str(error)


def test_an_encrypted_row_without_a_key_says_the_key_is_missing() -> None:
    row = ArtifactCodec(KEY).encode(artifact())
    error = decode_error(ArtifactCodec(None), row)
    assert "no ARTIFACT_ENCRYPTION_KEY is set" in str(error)


def test_a_plain_reasoning_row_is_refused_when_a_key_is_set() -> None:
    row = ArtifactCodec(None).encode(artifact())
    assert not row.is_encrypted
    error = decode_error(ArtifactCodec(KEY), row)
    assert "unencrypted" in str(error)
    # other types may legitimately be plain (written before ENCRYPT_ALL was switched on)
    tool_row = ArtifactCodec(None).encode(artifact(item_type="function_call"))
    assert ArtifactCodec(KEY, encrypt_all=True).decode(tool_row).item_type == "function_call"


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "empty"),
        (b"\x20{}", "unknown format version 2"),
        (b"\x00{}", "unknown format version 0"),
        (b"{}", "unknown format version 7"),  # a header-less legacy row
        (b"\x12{}", "unknown body kind 2"),
        (b"\x1f{}", "unknown body kind 15"),
        (b"\x11not an lz4 frame", "LZ4 frame is corrupt"),
        (b"\x10{not json", "not valid JSON"),
        (b"\x10\xff\xfe", "not valid JSON"),
        (b"\x10[1, 2]", "not a JSON object"),
    ],
)
def test_bad_plain_rows_are_decode_errors(blob: bytes, reason: str) -> None:
    error = decode_error(ArtifactCodec(None), plain_row(blob))
    assert reason in str(error)


def test_damaged_lz4_frames_are_decode_errors() -> None:
    frame = lz4.frame.compress(compact_json({"text": SECRET_TEXT * 50}), content_checksum=True)
    damaged = frame[:-2] + bytes([frame[-2] ^ 0x01]) + frame[-1:]
    for blob, reason in [
        (b"\x11" + frame[: len(frame) // 2], "truncated"),
        (b"\x11" + damaged, "corrupt"),
        (b"\x11" + frame + b"junk", "unexpected bytes"),
    ]:
        assert reason in str(decode_error(ArtifactCodec(None), plain_row(blob)))


def test_an_oversized_payload_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    row = ArtifactCodec(None).encode(artifact({"text": "y" * 5000}, item_type="function_call"))
    monkeypatch.setattr(artifact_codec, "MAX_PAYLOAD_BYTES", 1000)
    assert "exceeds 1000 bytes" in str(decode_error(ArtifactCodec(None), row))


def test_a_payload_that_is_not_json_is_a_persistence_error_naming_the_id() -> None:
    bad = artifact({"data": b"raw bytes", "text": SECRET_TEXT}, artifact_id="01BADPAYLOAD00000000")
    with pytest.raises(PersistenceError) as caught:
        ArtifactCodec(None).encode(bad)
    assert "01BADPAYLOAD00000000" in str(caught.value)
    assert SECRET_TEXT not in str(caught.value)


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("short", ["x", "fifteen chars!!", "  short-padded  "])
def test_a_short_key_is_a_clear_config_error(short: str) -> None:
    with pytest.raises(EncryptionKeyError) as caught:
        ArtifactCodec(short)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert isinstance(error, ValueError)
    message = str(error)
    assert "ARTIFACT_ENCRYPTION_KEY" in message
    assert "must be at least 16 characters" in message
    assert "use a long random passphrase" in message
    assert short.strip() not in message
    assert error.field == "ARTIFACT_ENCRYPTION_KEY"
    assert error.value is None


@pytest.mark.parametrize("no_key", [None, ""])
def test_no_key_means_no_encryption_and_a_warning(no_key: str | None) -> None:
    codec = ArtifactCodec(no_key, encrypt_all=True)
    assert not codec.has_key
    assert not codec.encode(artifact()).is_encrypted
    warning = codec.no_key_warning()
    assert "ARTIFACT_ENCRYPTION_KEY" in warning
    assert "NOT encrypted" in warning
    assert ArtifactCodec(KEY).no_key_warning() == ""


def test_the_fernet_key_comes_from_hkdf_not_a_bare_hash() -> None:
    row = ArtifactCodec(KEY).encode(artifact())
    # the original's scheme: Fernet key = base64(SHA-256(passphrase))
    naive = Fernet(base64.urlsafe_b64encode(hashlib.sha256(KEY.encode()).digest()))
    with pytest.raises(InvalidToken):
        naive.decrypt(row.blob)


def test_the_codec_repr_shows_no_key() -> None:
    assert KEY not in repr(ArtifactCodec(KEY))
    assert "key=set" in repr(ArtifactCodec(KEY))


# -- namespace --------------------------------------------------------------------------

NAMESPACE = re.compile(r"[a-z0-9_]{1,24}_[0-9a-f]{12}")


@given(pipe_id=any_text, key=st.sampled_from([None, KEY, OTHER_KEY]))
def test_namespaces_are_table_and_key_safe(pipe_id: str, key: str | None) -> None:
    namespace = ArtifactCodec(key).namespace(pipe_id)
    assert NAMESPACE.fullmatch(namespace)
    assert not namespace.startswith("_")


@pytest.mark.parametrize(
    ("pipe_id", "fragment"),
    [
        ("openrouter", "openrouter"),
        ("  My.Pipe! ", "my_pipe"),
        ("OpenRouter-Responses_2", "openrouter_responses_2"),
        ("Ünïcode", "n_code"),
        ("!!!", "pipe"),
        ("", "pipe"),
        ("a" * 30 + "b", "a" * 24),
        ("x" * 23 + ".y", "x" * 23),  # cut, then no trailing separator
    ],
)
def test_the_namespace_fragment(pipe_id: str, fragment: str) -> None:
    assert namespace_fragment(pipe_id) == fragment
    assert ArtifactCodec(None).namespace(pipe_id).rsplit("_", 1)[0] == fragment


def test_the_namespace_changes_with_the_key_and_the_pipe_id() -> None:
    keyed = ArtifactCodec(KEY).namespace("openrouter")
    assert keyed == ArtifactCodec(KEY, encrypt_all=True, lz4=False).namespace("openrouter")
    assert keyed != ArtifactCodec(OTHER_KEY).namespace("openrouter")
    assert keyed != ArtifactCodec(None).namespace("openrouter")
    assert keyed != ArtifactCodec(KEY).namespace("openrouter2")
    # pipe ids with the same fragment still get different namespaces
    assert ArtifactCodec(None).namespace("my.pipe") != ArtifactCodec(None).namespace("my-pipe")
    assert ArtifactCodec(None).namespace("x") == ArtifactCodec(None).namespace("x")


def test_the_namespace_contains_no_key_material() -> None:
    namespace = ArtifactCodec(KEY).namespace("openrouter")
    fingerprint = namespace.rsplit("_", 1)[1]
    assert KEY not in namespace
    for derived in (
        hashlib.sha256(KEY.encode()).hexdigest(),
        hashlib.sha256((KEY + "openrouter").encode()).hexdigest(),  # the original's hash8
        base64.urlsafe_b64encode(hashlib.sha256(KEY.encode()).digest()).decode().lower(),
    ):
        assert fingerprint not in derived
        assert derived[:8] not in namespace
