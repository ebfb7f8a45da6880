"""Open WebUI's file store, as the intake pass and generated images need it.

``OwuiFiles`` reads and writes files the way Open WebUI's own upload route
does, on Open WebUI's asyncio loop, with its blocking storage calls in worker
threads (what the route does: docs/open-webui-notes.md, "The file store").

Who may read a stored file: its owner, an admin, or a user Open WebUI's own
access check (``Files.check_access_by_user_id``) lets read. A chat cannot
pull another user's upload into its request by pasting that file's URL.

Who owns an upload: the chat's user; with no user (an API automation) the
fallback owner ``FALLBACK_STORAGE_EMAIL``, created once per process under a
lock, with a random id and a random OAuth subject and no password, so nobody
can log in as it; its role is never an administrator's (the valve refuses).

Open WebUI's modules are used only when Open WebUI is the running program
(its package is already imported): elsewhere (the bench, API tests) there is
no file store and ``FileStoreUnavailable`` says so; links and inline data
still work.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import io
import logging
import mimetypes
import os
import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from orpipe.adapters.openwebui.refusal import Refusal

__all__ = [
    "FileStoreUnavailable",
    "Owner",
    "OwuiFiles",
    "StoredFile",
    "StoredFileError",
    "internal_file_id",
]

log = logging.getLogger("orpipe.owui")

#: Open WebUI's own file URLs, relative or absolute: ``/api/v1/files/<id>[/content]``.
_INTERNAL = re.compile(
    r"^(?:https?://[^/?#]+)?/api/v1/files/([A-Za-z0-9][A-Za-z0-9_-]{0,127})(?:/content)?/?(?:[?#].*)?$"
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_PRIVILEGED = frozenset({"admin", "owner", "system"})


class StoredFileError(Refusal):
    """A stored file that cannot be used; ``reason`` is for the person who asked."""


class FileStoreUnavailable(StoredFileError):
    """Open WebUI's file store cannot be reached from here (not installed, not set up)."""


@dataclass(frozen=True, slots=True)
class Owner:
    """The Open WebUI user a stored file belongs to (or is read on behalf of)."""

    id: str
    email: str = ""
    name: str = ""
    role: str = "user"


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    data: bytes
    media_type: str
    filename: str


def internal_file_id(url: str) -> str | None:
    """The file id when ``url`` is one of Open WebUI's own file URLs, else None."""
    match = _INTERNAL.match(url.strip()) if isinstance(url, str) else None
    return match.group(1) if match else None


def content_url(file_id: str) -> str:
    return f"/api/v1/files/{file_id}/content"


class OwuiFiles:
    """Open WebUI's files and storage; one per process (it caches the fallback owner)."""

    def __init__(
        self,
        *,
        fallback_email: str,
        fallback_name: str,
        fallback_role: str = "pending",
    ) -> None:
        self._fallback = (fallback_email.strip(), fallback_name.strip(), fallback_role.strip())
        self._fallback_owner: Owner | None = None
        self._fallback_lock = asyncio.Lock()

    # -- owners ---------------------------------------------------------------------

    async def owner_for(self, user: Mapping[str, Any] | None) -> Owner:
        """The chat's user, or the fallback owner when the request has none."""
        if isinstance(user, Mapping) and user.get("id"):
            return Owner(
                id=str(user["id"]),
                email=str(user.get("email") or ""),
                name=str(user.get("name") or ""),
                role=str(user.get("role") or "user"),
            )
        return await self.fallback_owner()

    async def fallback_owner(self) -> Owner:
        """FALLBACK_STORAGE_*'s user, looked up by e-mail, created once if missing."""
        if self._fallback_owner is not None:
            return self._fallback_owner
        async with self._fallback_lock:
            if self._fallback_owner is None:
                self._fallback_owner = await self._find_or_create_fallback()
            return self._fallback_owner

    async def _find_or_create_fallback(self) -> Owner:
        email, name, role = self._fallback
        if role in _PRIVILEGED:
            # The valve refuses these; a direct caller gets the safe role instead.
            log.warning("fallback storage role %r refused; creating it as 'pending'", role)
            role = "pending"
        users = _module("open_webui.models.users").Users
        found = await users.get_user_by_email(email)
        if found is None:
            found = await users.insert_new_user(
                f"orpipe-{uuid.uuid4().hex}",
                name,
                email,
                role=role,
                # A random subject no identity provider will ever send: no one can log in.
                oauth={"orpipe-storage": {"sub": f"orpipe-storage:{uuid.uuid4().hex}"}},
            )
            if found is None:
                raise StoredFileError(f"the storage owner {email} could not be created")
            log.info("created the storage owner %s (role %s)", email, role)
        elif found.role in _PRIVILEGED:
            log.warning(
                "the storage owner %s has the role %r; uploads of requests without a user "
                "are owned by an administrator account",
                email,
                found.role,
            )
        return Owner(id=found.id, email=found.email, name=found.name, role=found.role)

    # -- limits ---------------------------------------------------------------------

    async def rag_file_limit_bytes(self) -> int | None:
        """Open WebUI's own file size limit when RAG is on (None: no limit, or RAG bypassed)."""
        config = _module("open_webui.models.config").Config
        values = await config.get_many("rag.file.max_size", "rag.bypass_embedding_and_retrieval")
        if values.get("rag.bypass_embedding_and_retrieval"):
            return None
        size = values.get("rag.file.max_size")
        try:
            mb = int(size) if size not in (None, "") else 0
        except (TypeError, ValueError):
            return None
        return min(mb, 500) * 1024 * 1024 if mb > 0 else None

    # -- reading --------------------------------------------------------------------

    async def read(self, file_id: str, *, reader: Owner, limit_bytes: int) -> StoredFile:
        """A stored file's bytes, when ``reader`` may read it and it fits ``limit_bytes``."""
        files = _module("open_webui.models.files").Files
        row = await files.get_file_by_id(file_id)
        if row is None or not await self._may_read(files, row, reader):
            # The same answer either way: whether a file exists is not for others to learn.
            raise StoredFileError(f"the file {file_id} was not found")
        if not row.path:
            raise StoredFileError(f"the file {row.filename!r} has no stored content")
        meta = row.meta or {}
        declared = meta.get("size")
        if isinstance(declared, int) and declared > limit_bytes:
            raise StoredFileError(_too_large(row.filename, declared, limit_bytes))
        storage = _module("open_webui.storage.provider").Storage
        data = await asyncio.to_thread(_read_local, storage, row.path, limit_bytes, row.filename)
        media_type = meta.get("content_type")
        if not isinstance(media_type, str) or "/" not in media_type:
            media_type = mimetypes.guess_type(row.filename)[0] or "application/octet-stream"
        return StoredFile(id=row.id, data=data, media_type=media_type, filename=row.filename)

    @staticmethod
    async def _may_read(files: Any, row: Any, reader: Owner) -> bool:
        if row.user_id == reader.id or reader.role == "admin":
            return True
        return bool(await files.check_access_by_user_id(row.id, reader.id, "read"))

    # -- writing --------------------------------------------------------------------

    async def save(self, data: bytes, *, media_type: str, filename: str, owner: Owner) -> str:
        """Store ``data`` as a new file of ``owner``; its id (served at ``content_url``)."""
        files_module = _module("open_webui.models.files")
        storage = _module("open_webui.storage.provider").Storage
        file_id = str(uuid.uuid4())
        name = _safe_filename(filename, media_type)
        tags = {
            "OpenWebUI-User-Email": owner.email,
            "OpenWebUI-User-Id": owner.id,
            "OpenWebUI-User-Name": owner.name,
            "OpenWebUI-File-Id": file_id,
        }
        _, path = await asyncio.to_thread(
            storage.upload_file, io.BytesIO(data), f"{file_id}_{name}", tags
        )
        digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        form = files_module.FileForm(
            id=file_id,
            filename=name,
            path=path,
            data={},
            meta={
                "name": name,
                "content_type": media_type,
                "size": len(data),
                "file_hash": digest,
                "data": {"source": "orpipe"},
            },
        )
        row = await files_module.Files.insert_new_file(owner.id, form)
        if row is None:
            # The row failed: do not leave an orphan blob behind.
            await asyncio.to_thread(storage.delete_file, path)
            raise StoredFileError(f"{name!r} could not be recorded in Open WebUI's files")
        return file_id


def _module(name: str) -> Any:
    # Only inside Open WebUI: importing it from elsewhere would run its start-up
    # (configuration, database migrations) in a process that is not Open WebUI.
    if "open_webui" not in sys.modules:
        raise FileStoreUnavailable("this pipe is not running inside Open WebUI")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise FileStoreUnavailable(
            f"Open WebUI's file store is not available here ({exc.name or name} cannot be imported)"
        ) from None


def _read_local(storage: Any, path: str, limit_bytes: int, filename: str) -> bytes:
    local = storage.get_file(path)
    size = os.path.getsize(local)
    if size > limit_bytes:
        raise StoredFileError(_too_large(filename, size, limit_bytes))
    with open(local, "rb") as handle:
        data = handle.read(limit_bytes + 1)
    if len(data) > limit_bytes:  # grew since the size was read
        raise StoredFileError(_too_large(filename, len(data), limit_bytes))
    return data


def _too_large(filename: str, size: int, limit: int) -> str:
    return (
        f"the file {filename!r} is {size / 1048576:.1f} MB, over the "
        f"{limit / 1048576:g} MB limit for inline attachments"
    )


def _safe_filename(filename: str, media_type: str) -> str:
    """A storage-safe base name, with an extension that matches the media type."""
    base = PurePosixPath(filename.replace("\\", "/")).name if filename else ""
    base = _SAFE_NAME.sub("_", base).strip("._")[:100]
    if not base:
        base = "attachment"
    if not PurePosixPath(base).suffix:
        base += mimetypes.guess_extension(media_type) or ""
    return base
