"""``StoreSettings``: everything the artifact store is built from, and nothing else.

The store reads only this, never a settings form: whoever hosts the engine
(the Open WebUI valves, a bench) fills it in. Secrets (the encryption key, a
database or Redis URL that may hold a password) are fields here but never
appear in ``repr`` and enter ``key()`` only as a keyed hash, so the key can be
compared, kept and logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["StoreSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """Everything the store is built from (secrets included: never printed)."""

    #: Names the store's namespace, with the encryption key (``ArtifactCodec.namespace``).
    pipe_id: str
    #: SQLAlchemy URL of the artifact table.
    database_url: str
    #: "" means artifacts are stored unencrypted.
    encryption_key: str
    encrypt_all: bool
    lz4: bool
    min_compress_bytes: int
    #: Artifacts per commit (SQL) and per flush (Redis).
    batch_size: int
    #: Worker threads for the blocking database calls.
    db_threads: int
    #: None: no Redis write-behind, writes go straight to SQL.
    redis_url: str | None
    cache_ttl_s: int
    pending_warn_threshold: int
    flush_failure_limit: int
    #: Bounds of the rows a writer holds until SQL has them (durability ``writer_holds``):
    #: full, the persister waits (``statistics().store``: ``held``, ``held_bytes``).
    held_max_rows: int = 10_000
    held_max_bytes: int = 64 * 1024 * 1024

    def key(self) -> tuple[object, ...]:
        """Equal keys describe the same store; the secrets enter only as a keyed hash."""
        secret = hashlib.blake2b(
            "\x00".join([self.database_url, self.encryption_key, self.redis_url or ""]).encode(),
            key=b"orpipe-store",
            digest_size=16,
        ).hexdigest()
        return (
            self.pipe_id,
            secret,
            self.encrypt_all,
            self.lz4,
            self.min_compress_bytes,
            self.batch_size,
            self.db_threads,
            self.cache_ttl_s,
            self.pending_warn_threshold,
            self.flush_failure_limit,
            self.held_max_rows,
            self.held_max_bytes,
        )

    def __repr__(self) -> str:
        return f"StoreSettings(pipe_id={self.pipe_id!r}, redis={self.redis_url is not None})"
