"""The artifact codec: payloads to stored blobs and back, and the store's namespace.

This module owns the byte format of a stored artifact, the encryption key
handling and the namespace (table name suffix, Redis key prefix) derived from
the key and the pipe id. It is plain, synchronous and pure CPU work (no I/O):
callers may run it on the trio thread for ordinary payload sizes.

Encoding (``ArtifactCodec.encode``)::

    payload ─► compact JSON, UTF-8 ─► LZ4 frame? ─► format byte + body ─► Fernet?

* **JSON**: ``separators=(",", ":")``, ``ensure_ascii=False`` (non-ASCII text
  stays as UTF-8, the compact form). JSON text in UTF-8 cannot hold a lone
  surrogate (``"\\ud800"``), but a payload parsed from JSON may contain one
  (``json.loads('"\\\\ud800"')``), so such a payload is written with
  ``ensure_ascii=True`` instead: still valid UTF-8 JSON, and the escape brings
  the same lone surrogate back on decode. Nothing is lost or replaced.
* **LZ4** (``lz4=True``): applied when the JSON is at least
  ``min_compress_bytes`` long *and* the frame is smaller than the JSON, to
  plain rows as well as encrypted ones (seed §K.2.18). The frame carries a
  content checksum, so a corrupted plain row is detected.
* **Format byte**: high nibble = format version (1), low nibble = body kind
  (0 plain JSON, 1 LZ4 frame). Any other byte is rejected on decode.
* **Fernet** when encryption applies: a key is set and either
  ``encrypt_all`` or the item type is ``reasoning`` (any case). The row's
  ``blob`` is then the Fernet token (URL-safe base64 text as bytes) and
  ``is_encrypted`` is true.

Keys (seed §K.2.17 fixed): ``ARTIFACT_ENCRYPTION_KEY`` must have at least 16
characters. Two independent 32-byte keys are derived from its UTF-8 bytes
with HKDF-SHA256, the fixed salt ``b"orpipe/artifact-store/hkdf-salt/v1"``
and the info strings ``b"orpipe artifact encryption v1"`` (the Fernet key,
URL-safe base64) and ``b"orpipe artifact namespace v1"`` (the HMAC key of
the namespace fingerprint). HKDF does not stretch: it is right for a long random
passphrase, which is what the setting asks for; a short guessable one stays
guessable from any stored ciphertext, with or without the fingerprint.

Namespace: ``<fragment>_<fingerprint>``; fragment = the pipe id lower-cased,
characters outside ``[a-z0-9_]`` turned into ``_``, stripped of ``_``, cut to
24 characters (``pipe`` if empty); fingerprint = the first 12 hex digits of
HMAC-SHA256(namespace key, pipe id). Without a key the HMAC key is a fixed
constant, so the namespace depends on the pipe id alone. Changing the key
changes the namespace: a new, empty store, and the old rows stay unreadable by
design. The fingerprint is a keyed hash of a derived key, so it reveals
nothing about the key beyond what a ciphertext already does.

Decoding never crashes on a bad row: wrong key, tampered token, unknown
format byte, broken LZ4 frame or JSON all raise ``ArtifactDecodeError`` with
the artifact id and a reason, never with payload text or key material.
Fernet authenticates the blob, not the row's other columns (id, chat).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import lz4.frame
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orpipe.adapters.store.rows import StoredRow
from orpipe.engine.artifacts import Artifact
from orpipe.engine.errors import ArtifactDecodeError, ConfigError, PersistenceError
from orpipe.engine.messages import thaw_json

__all__ = [
    "FORMAT_VERSION",
    "MAX_PAYLOAD_BYTES",
    "MIN_KEY_LENGTH",
    "ArtifactCodec",
    "EncryptionKeyError",
    "namespace_fragment",
]

FORMAT_VERSION = 1
_KIND_PLAIN = 0
_KIND_LZ4 = 1
MIN_KEY_LENGTH = 16
#: Decompressed bodies larger than this are refused (a corrupted or hostile
#: plain row must not make the reader allocate without bound).
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024

_HKDF_SALT = b"orpipe/artifact-store/hkdf-salt/v1"
_FERNET_INFO = b"orpipe artifact encryption v1"
_NAMESPACE_INFO = b"orpipe artifact namespace v1"
#: The fingerprint key when no encryption key is set (the namespace then only
#: separates pipes; there is nothing secret to protect).
_NO_KEY_NAMESPACE_KEY = b"orpipe artifact namespace without encryption key v1"
_FRAGMENT_LENGTH = 24
_FINGERPRINT_HEX = 12
_NOT_ALLOWED = re.compile(r"[^a-z0-9_]")

_NO_KEY_WARNING = (
    "ARTIFACT_ENCRYPTION_KEY is not set: stored artifacts (reasoning items, tool calls and "
    "their outputs) are compressed but NOT encrypted. Set a long random passphrase of at "
    "least 16 characters to encrypt them; changing the key starts a new, empty artifact store."
)


class EncryptionKeyError(ConfigError):
    """``ARTIFACT_ENCRYPTION_KEY`` is too short. The key itself is never kept or shown."""

    def __init__(self, length: int) -> None:
        # Not ConfigError.__init__: its message shows repr(value), and the value is the key.
        self.field = "ARTIFACT_ENCRYPTION_KEY"
        self.value = None
        self.allowed = f"at least {MIN_KEY_LENGTH} characters"
        Exception.__init__(
            self,
            f"ARTIFACT_ENCRYPTION_KEY must be at least {MIN_KEY_LENGTH} characters "
            f"(it has {length}); use a long random passphrase.",
        )


def namespace_fragment(pipe_id: str) -> str:
    """The readable part of a namespace: a table- and key-safe form of the pipe id."""
    fragment = _NOT_ALLOWED.sub("_", pipe_id.lower()).strip("_")[:_FRAGMENT_LENGTH]
    return fragment.strip("_") or "pipe"


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class _Keys:
    fernet: Fernet
    namespace: bytes


def _derive_keys(passphrase: str) -> _Keys:
    secret = passphrase.encode("utf-8", "surrogatepass")
    fernet_key = base64.urlsafe_b64encode(_hkdf(secret, _FERNET_INFO))
    return _Keys(fernet=Fernet(fernet_key), namespace=_hkdf(secret, _NAMESPACE_INFO))


class ArtifactCodec:
    """``adapters.store.rows.RowCodec``: Artifact ⇄ StoredRow (see the module doc).

    ``encryption_key``: None or "" = nothing is encrypted (``no_key_warning``
    says so); otherwise at least 16 characters, else ``EncryptionKeyError``
    (a ``ConfigError``). ``encrypt_all``: encrypt every item type, not only
    reasoning. ``lz4`` / ``min_compress_bytes``: compression (see above).
    """

    def __init__(
        self,
        encryption_key: str | None,
        *,
        encrypt_all: bool = False,
        lz4: bool = True,
        min_compress_bytes: int = 0,
    ) -> None:
        if min_compress_bytes < 0:
            raise ConfigError("MIN_COMPRESS_BYTES", min_compress_bytes, "0 or more")
        if encryption_key and len(encryption_key.strip()) < MIN_KEY_LENGTH:
            raise EncryptionKeyError(len(encryption_key.strip()))
        self._keys = _derive_keys(encryption_key) if encryption_key else None
        self.encrypt_all = encrypt_all
        self.lz4 = lz4
        self.min_compress_bytes = min_compress_bytes

    def __repr__(self) -> str:
        return (
            f"ArtifactCodec(key={'set' if self.has_key else 'none'}, "
            f"encrypt_all={self.encrypt_all}, lz4={self.lz4}, "
            f"min_compress_bytes={self.min_compress_bytes})"
        )

    @property
    def has_key(self) -> bool:
        return self._keys is not None

    def encrypts(self, item_type: str) -> bool:
        """Whether an artifact of this type is stored encrypted."""
        return self.has_key and (self.encrypt_all or item_type.lower() == "reasoning")

    def no_key_warning(self) -> str:
        """What to tell the administrator once when no key is set ("" when one is)."""
        return "" if self.has_key else _NO_KEY_WARNING

    def namespace(self, pipe_id: str) -> str:
        """``<fragment>_<12 hex>``: safe in a table name and a Redis key (module doc)."""
        key = self._keys.namespace if self._keys else _NO_KEY_NAMESPACE_KEY
        digest = hmac.new(key, pipe_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return f"{namespace_fragment(pipe_id)}_{digest.hexdigest()[:_FINGERPRINT_HEX]}"

    # -- encode ------------------------------------------------------------------

    def encode(self, artifact: Artifact) -> StoredRow:
        """The row for ``artifact``. Raises ``PersistenceError`` if its payload is not JSON."""
        framed = self._frame(_to_json(artifact))
        encrypted = self.encrypts(artifact.item_type)
        if encrypted:
            assert self._keys is not None  # encrypts() is false without keys
            framed = self._keys.fernet.encrypt(framed)
        return StoredRow(
            artifact_id=artifact.artifact_id,
            chat_id=artifact.chat_id,
            message_id=artifact.message_id,
            item_type=artifact.item_type,
            model_id=artifact.model_id,
            user_id=artifact.user_id,
            created_at=artifact.created_at,
            blob=framed,
            is_encrypted=encrypted,
        )

    def _frame(self, body: bytes) -> bytes:
        if self.lz4 and len(body) >= self.min_compress_bytes:
            packed: bytes = lz4.frame.compress(body, content_checksum=True)
            if len(packed) < len(body):
                return _format_byte(_KIND_LZ4) + packed
        return _format_byte(_KIND_PLAIN) + body

    # -- decode ------------------------------------------------------------------

    def decode(self, row: StoredRow) -> Artifact:
        """The artifact in ``row``; ``ArtifactDecodeError`` naming its id if unreadable."""
        framed = self._decrypt(row) if row.is_encrypted else self._check_plain_allowed(row)
        payload = _parse_json(row.artifact_id, _unframe(row.artifact_id, framed))
        return Artifact(
            artifact_id=row.artifact_id,
            chat_id=row.chat_id,
            message_id=row.message_id,
            item_type=row.item_type,
            payload=payload,
            model_id=row.model_id,
            user_id=row.user_id,
            created_at=row.created_at,
        )

    def _decrypt(self, row: StoredRow) -> bytes:
        if self._keys is None:
            raise ArtifactDecodeError(
                row.artifact_id, "it is encrypted and no ARTIFACT_ENCRYPTION_KEY is set"
            )
        try:
            return self._keys.fernet.decrypt(row.blob)
        except (InvalidToken, TypeError, ValueError):
            raise ArtifactDecodeError(
                row.artifact_id, "decryption failed: wrong key, or the row was altered"
            ) from None

    def _check_plain_allowed(self, row: StoredRow) -> bytes:
        # With a key, every reasoning row of this namespace was written encrypted
        # (the namespace changes with the key), so a plain one was put there by
        # someone else: refusing it keeps reasoning authenticated by the key.
        # Other types may be plain legitimately (written before ENCRYPT_ALL).
        if self.has_key and row.item_type.lower() == "reasoning":
            raise ArtifactDecodeError(
                row.artifact_id, "a reasoning item stored unencrypted although a key is set"
            )
        return row.blob


def _format_byte(kind: int) -> bytes:
    return bytes([(FORMAT_VERSION << 4) | kind])


def _to_json(artifact: Artifact) -> bytes:
    payload = thaw_json(artifact.payload)
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise PersistenceError(
            f"Artifact {artifact.artifact_id} cannot be stored: its payload is not JSON "
            f"({type(exc).__name__})."
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: UTF-8 cannot carry it, a \\u escape can (module doc).
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _unframe(artifact_id: str, framed: bytes) -> bytes:
    if not framed:
        raise ArtifactDecodeError(artifact_id, "the stored blob is empty")
    version, kind = framed[0] >> 4, framed[0] & 0x0F
    if version != FORMAT_VERSION:
        raise ArtifactDecodeError(artifact_id, f"unknown format version {version}")
    if kind == _KIND_PLAIN:
        return framed[1:]
    if kind == _KIND_LZ4:
        return _decompress(artifact_id, framed[1:])
    raise ArtifactDecodeError(artifact_id, f"unknown body kind {kind}")


def _decompress(artifact_id: str, packed: bytes) -> bytes:
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        body: bytes = decompressor.decompress(packed, max_length=MAX_PAYLOAD_BYTES)
    except (RuntimeError, ValueError):  # lz4 reports bad frames as RuntimeError
        raise ArtifactDecodeError(artifact_id, "the LZ4 frame is corrupt") from None
    if not decompressor.eof:
        reason = (
            f"the payload exceeds {MAX_PAYLOAD_BYTES} bytes"
            if len(body) >= MAX_PAYLOAD_BYTES
            else "the LZ4 frame is truncated"
        )
        raise ArtifactDecodeError(artifact_id, reason)
    if decompressor.unused_data:
        raise ArtifactDecodeError(artifact_id, "unexpected bytes after the LZ4 frame")
    return body


def _parse_json(artifact_id: str, body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:  # also UnicodeDecodeError
        raise ArtifactDecodeError(artifact_id, "the payload is not valid JSON") from None
    if not isinstance(value, dict):
        raise ArtifactDecodeError(artifact_id, "the payload is not a JSON object")
    return value
