"""What the write-behind keeps in Redis, and in which byte format.

Keys, all under ``orpipe:<ns>:`` (``<ns>`` is the codec's namespace, which
carries the pipe id and the key fingerprint; it may not contain ``:``, so two
namespaces never share a key)::

    orpipe:<ns>:artifacts              Stream, one entry per queued row; group "flushers"
    orpipe:<ns>:artifacts:dead         Stream of rows the database rejected for good
    orpipe:<ns>:artifact:<chat>:<id>   the row (read cache): no TTL while it is queued,
                                       ``cache_ttl_s`` once it is in SQL or read from SQL
    orpipe:<ns>:queued:<chat>          Hash id -> message id of rows queued, not yet in SQL

A row is stored as a msgpack array led by a format number, in the stream
entry's ``row`` field and as the cache value alike. Rows arrive already
encoded (and encrypted where the codec says so), so Redis never holds a
plaintext payload that was meant to be encrypted.

Plain and synchronous: no I/O.
"""

from __future__ import annotations

from typing import Final, cast

import msgspec
from redis.typing import EncodableT, FieldT

from orpipe.adapters.store.rows import StoredRow

__all__ = [
    "GROUP",
    "ReadFields",
    "RedisKeys",
    "WrittenFields",
    "entries_of",
    "entry_fields",
    "pack_row",
    "text",
    "unpack_row",
    "unpack_row_or_none",
]

#: The consumer group of the flushers.
GROUP: Final = "flushers"

_FORMAT: Final = 1

#: The serialised row: format, id, chat, message, type, model, user, created, blob, encrypted.
_Packed = tuple[int, str, str, str, str, str | None, str | None, float, bytes, bool]
#: A stream entry's fields as read (RESP2 gives bytes) ...
ReadFields = dict[bytes, bytes]
#: ... and as written.
WrittenFields = dict[FieldT, EncodableT]


class RedisKeys:
    """Every key of one namespace (see the module doc)."""

    __slots__ = ("_prefix", "dead", "stream")

    def __init__(self, namespace: str) -> None:
        self._prefix = f"orpipe:{namespace}"
        self.stream = f"{self._prefix}:artifacts"
        self.dead = f"{self.stream}:dead"

    def cache(self, chat_id: str, artifact_id: str) -> str:
        return f"{self._prefix}:artifact:{chat_id}:{artifact_id}"

    def queued(self, chat_id: str) -> str:
        return f"{self._prefix}:queued:{chat_id}"


def pack_row(row: StoredRow) -> bytes:
    packed: _Packed = (
        _FORMAT,
        row.artifact_id,
        row.chat_id,
        row.message_id,
        row.item_type,
        row.model_id,
        row.user_id,
        row.created_at,
        row.blob,
        row.is_encrypted,
    )
    return msgspec.msgpack.encode(packed)


def unpack_row(data: bytes) -> StoredRow:
    """Raises ``ValueError`` for anything that is not a row of a known format."""
    try:
        fmt, aid, chat, message, item_type, model, user, created, blob, encrypted = (
            msgspec.msgpack.decode(data, type=_Packed)
        )
    except msgspec.MsgspecError as exc:
        raise ValueError(f"not a stored row: {exc}") from None
    if fmt != _FORMAT:
        raise ValueError(f"unknown row format {fmt}")
    return StoredRow(
        artifact_id=aid,
        chat_id=chat,
        message_id=message,
        item_type=item_type,
        model_id=model,
        user_id=user,
        created_at=created,
        blob=blob,
        is_encrypted=encrypted,
    )


def unpack_row_or_none(value: bytes | None) -> StoredRow | None:
    """A cached row, or None for a miss (a foreign or corrupt entry is a miss too)."""
    if value is None:
        return None
    try:
        return unpack_row(value)
    except ValueError:
        return None


def entry_fields(row: StoredRow, packed: bytes) -> WrittenFields:
    """The stream entry of a row packed by ``pack_row``."""
    return {b"id": row.artifact_id.encode(), b"row": packed}


def entries_of(reply: object) -> list[tuple[bytes, ReadFields]]:
    """``[[stream, [(id, fields), ...]]]`` (RESP2) as a flat list; ``[]`` on a timeout."""
    entries: list[tuple[bytes, ReadFields]] = []
    for _stream, items in cast(
        "list[tuple[object, list[tuple[bytes, ReadFields | None]]]]", reply or []
    ):
        entries.extend((entry_id, dict(fields or {})) for entry_id, fields in items)
    return entries


def text(value: object) -> str:
    """A Redis reply value (bytes under RESP2) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
