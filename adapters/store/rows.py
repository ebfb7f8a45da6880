"""Artifacts as stored rows, and the store interface the SQL and Redis layers share.

trio-flavoured. Layers, outermost first::

    CodecStore (engine.ports.ArtifactStore)   Artifact ⇄ StoredRow through the codec
      └── RedisWriteBehind (RowStore)         optional: queue + read cache in Redis
            └── SqlRowStore (RowStore)         the durable table

Rows are encoded (compressed, encrypted) before they leave ``CodecStore``, so
nothing below it, Redis included, ever holds a plaintext payload that was
meant to be encrypted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from orpipe.engine.artifacts import Artifact
from orpipe.engine.errors import ArtifactDecodeError

__all__ = ["CodecStore", "RowCodec", "RowStore", "StoredRow"]

log = logging.getLogger("orpipe.persistence")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredRow:
    """One artifact as it is stored: its payload encoded by the codec."""

    artifact_id: str
    chat_id: str
    message_id: str
    item_type: str
    model_id: str | None
    user_id: str | None
    #: Unix seconds.
    created_at: float
    #: The codec's output: a format byte and the body, or a Fernet token.
    blob: bytes
    is_encrypted: bool

    def __repr__(self) -> str:
        return f"StoredRow(id={self.artifact_id}, type={self.item_type}, {len(self.blob)} bytes)"


class RowStore(Protocol):
    """Durable rows (trio-flavoured). Raises ``StoreUnavailable`` / ``PersistenceError`` only."""

    async def write_rows(self, rows: Sequence[StoredRow]) -> None:
        """Insert rows; an id that exists already is left as it is (idempotent)."""
        ...

    async def fetch_rows(self, chat_id: str, artifact_ids: Sequence[str]) -> list[StoredRow]: ...

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]: ...

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int: ...

    async def delete_older_than(self, cutoff_unix_s: float) -> int: ...


class RowCodec(Protocol):
    """Turns payloads into blobs and back (``adapters.store.codec.ArtifactCodec``)."""

    def encode(self, artifact: Artifact) -> StoredRow: ...

    def decode(self, row: StoredRow) -> Artifact:
        """Raises ``ArtifactDecodeError`` naming the row's id."""
        ...


class CodecStore:
    """``engine.ports.ArtifactStore`` over a ``RowStore``: encodes on the way in,
    decodes on the way out, and skips (with a warning naming the id) any row it
    cannot read."""

    def __init__(self, rows: RowStore, codec: RowCodec) -> None:
        self.rows = rows
        self.codec = codec

    async def write(self, artifacts: Sequence[Artifact]) -> None:
        await self.rows.write_rows([self.codec.encode(a) for a in artifacts])

    async def fetch(self, chat_id: str, artifact_ids: Sequence[str]) -> dict[str, Artifact]:
        found: dict[str, Artifact] = {}
        for row in await self.rows.fetch_rows(chat_id, artifact_ids):
            try:
                found[row.artifact_id] = self.codec.decode(row)
            except ArtifactDecodeError as exc:
                log.warning("%s", exc.message)
        return found

    async def list_ids(self, chat_id: str, *, message_ids: Sequence[str] = ()) -> list[str]:
        return await self.rows.list_ids(chat_id, message_ids=message_ids)

    async def delete(self, chat_id: str, artifact_ids: Sequence[str]) -> int:
        return await self.rows.delete(chat_id, artifact_ids)

    async def delete_older_than(self, cutoff_unix_s: float) -> int:
        return await self.rows.delete_older_than(cutoff_unix_s)

    def statistics(self) -> dict[str, int | float | str]:
        """The row store's own figures (``Engine.statistics().store``), if it keeps any."""
        figures = getattr(self.rows, "statistics", None)
        return dict(figures()) if callable(figures) else {}
