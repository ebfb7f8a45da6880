"""The intake pass: a mapped request's attachments made ready to send, on Open WebUI's loop.

``adapters.openwebui.request`` maps content parts synchronously and checks what
needs no I/O (inline sizes, formats, modalities). ``Intake.prepare`` then
does what needs the network or Open WebUI's storage, for ``input_image``,
``input_file`` and ``input_video`` parts of user messages:

* **Open WebUI's own file URLs** (``/api/v1/files/<id>/content``) are read
  from its storage, on behalf of the chat's user, and inlined as ``data:``
  URLs: OpenRouter cannot reach them. Images up to BASE64_MAX_SIZE_MB,
  files too, videos up to VIDEO_MAX_SIZE_MB.
* **Remote image links** on the newest user message are downloaded
  (``adapters.openwebui.downloader``: SSRF-vetted, size-capped, retried within a
  budget) and inlined; with SAVE_REMOTE_FILE_URLS a copy goes into Open
  WebUI's storage. **Remote file links** are passed to OpenRouter as they
  are, unless SAVE_REMOTE_FILE_URLS asks for a copy: then they are
  downloaded, stored and inlined. A link in ``file_data`` is treated as a
  link (downloaded and inlined).
* **Inline data** (``data:`` URLs in ``image_url`` / ``file_data``) on the
  newest user message is copied into Open WebUI's storage when
  SAVE_FILE_DATA_CONTENT says so; what is sent stays inline.
* **Videos** are never downloaded: YouTube links are passed, other links are
  vetted by the SSRF guard (a private or unresolvable address is refused),
  inline videos were size-checked by the mapping.

Only the newest user message downloads or stores anything: older turns were
handled when they were new, and their images are not sent again
(``adapters.openwebui.image_selection``).

An attachment that cannot be had is left out, and the person reads why in a
note; the request goes on with the rest. Copies that fail to store are only
logged: what is sent is unaffected.

Bounds: downloads and storage reads of one request run at most
``per_request`` at a time (and the downloader has its per-process limit), so
at most that many attachment buffers are in flight, each at most its limit.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orpipe.adapters.openwebui.data_urls import AttachmentError, parse_data_url
from orpipe.adapters.openwebui.downloader import Downloaded, DownloadError
from orpipe.adapters.openwebui.files import Owner, StoredFile, StoredFileError, internal_file_id
from orpipe.adapters.openwebui.ssrf_guard import AsyncioResolver, Resolver, UnsafeUrl, vet

__all__ = [
    "FileStore",
    "Intake",
    "IntakeLimits",
    "IntakeResult",
    "UrlFetcher",
    "effective_remote_limit",
    "is_youtube",
]

log = logging.getLogger("orpipe.owui")

JsonDict = dict[str, Any]

_YOUTUBE = re.compile(
    r"^https?://(?:(?:www|m|music)\.)?(?:youtube\.com/(?:watch\?(?:.*&)?v=|shorts/|embed/|live/)"
    r"|youtu\.be/)[A-Za-z0-9_-]{6,}",
    re.IGNORECASE,
)


class FileStore(Protocol):
    """Open WebUI's files (``adapters.openwebui.files.OwuiFiles``)."""

    async def owner_for(self, user: Mapping[str, Any] | None) -> Owner: ...

    async def rag_file_limit_bytes(self) -> int | None: ...

    async def read(self, file_id: str, *, reader: Owner, limit_bytes: int) -> StoredFile: ...

    async def save(self, data: bytes, *, media_type: str, filename: str, owner: Owner) -> str: ...


class UrlFetcher(Protocol):
    """Remote downloads (``adapters.openwebui.downloader.Downloader``)."""

    async def fetch(
        self,
        url: str,
        *,
        request_slots: asyncio.Semaphore | None = None,
        max_bytes: int | None = None,
    ) -> Downloaded: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class IntakeLimits:
    """The attachment valves, in bytes."""

    #: BASE64_MAX_SIZE_MB: the largest attachment sent inline.
    inline_max_bytes: int = 50 * 1024 * 1024
    #: VIDEO_MAX_SIZE_MB: the largest video sent inline.
    video_max_bytes: int = 100 * 1024 * 1024
    #: REMOTE_FILE_MAX_SIZE_MB, clamped by Open WebUI's RAG limit (``effective_remote_limit``).
    remote_max_bytes: int = 50 * 1024 * 1024
    save_remote_file_urls: bool = True
    save_file_data_content: bool = True
    #: REMOTE_DOWNLOADS_PER_REQUEST: downloads and storage reads at once.
    per_request: int = 3
    #: Hosts that may be vetted over plain http (ALLOW_INSECURE_HTTP_HOSTS).
    allow_http_hosts: Collection[str] = ()
    #: Tests only: a loopback server may be the target.
    allow_loopback: bool = False


@dataclass(frozen=True, slots=True)
class IntakeResult:
    input: tuple[JsonDict, ...]
    #: Sentences for the person chatting: what was left out and why.
    notes: tuple[str, ...] = ()
    #: Ids of the copies stored in Open WebUI's files.
    stored: tuple[str, ...] = ()


def is_youtube(url: str) -> bool:
    return bool(_YOUTUBE.match(url.strip()))


def effective_remote_limit(valve_mb: int, rag_limit_bytes: int | None) -> int:
    """REMOTE_FILE_MAX_SIZE_MB against Open WebUI's own limit when RAG is on.

    The smaller wins; a valve still at its default of 50 MB follows a larger
    RAG limit, so raising Open WebUI's limit is enough (the original's rule).
    """
    valve = valve_mb * 1024 * 1024
    if rag_limit_bytes is None:
        return valve
    if valve_mb == 50:
        return rag_limit_bytes
    return min(valve, rag_limit_bytes)


@dataclass
class _Pass:
    """One request's run: what was left out, and what was stored."""

    notes: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class Intake:
    """Prepares one request's attachments (see the module docstring)."""

    limits: IntakeLimits
    fetcher: UrlFetcher
    #: Open WebUI's files; None where there are none (the bench, API calls in tests).
    store: FileStore | None
    #: Whose files may be read, and who owns the copies stored; None for no user.
    owner: Owner | None
    resolver: Resolver = field(default_factory=AsyncioResolver)
    #: Downloads and storage reads of this request in flight (``limits.per_request``).
    _slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.limits.per_request)

    async def prepare(self, items: Sequence[Mapping[str, Any]]) -> IntakeResult:
        newest = _newest_user_index(items)
        run = _Pass()
        out: list[JsonDict] = [dict(item) for item in items]
        jobs: list[tuple[int, int, asyncio.Task[JsonDict | None]]] = []
        async with asyncio.TaskGroup() as group:
            for i, item in enumerate(out):
                content = item.get("content")
                if item.get("role") != "user" or not isinstance(content, list | tuple):
                    continue
                content = item["content"] = list(content)
                for j, part in enumerate(content):
                    work = self._job(part, fresh=i == newest, run=run)
                    if work is not None:
                        jobs.append((i, j, group.create_task(work)))
        dropped: set[tuple[int, int]] = set()
        for i, j, task in jobs:
            replacement = task.result()
            if replacement is None:
                dropped.add((i, j))
            else:
                out[i]["content"][j] = replacement
        for i, item in enumerate(out):
            if any(index == i for index, _ in dropped):
                item["content"] = [
                    p for j, p in enumerate(item["content"]) if (i, j) not in dropped
                ]
        return IntakeResult(tuple(out), tuple(run.notes), tuple(run.stored))

    def _job(self, part: Any, *, fresh: bool, run: _Pass) -> Any:
        if not isinstance(part, Mapping):
            return None
        kind = part.get("type")
        if kind == "input_image" and isinstance(part.get("image_url"), str):
            return self._image(dict(part), fresh, run)
        if kind == "input_file":
            return self._file(dict(part), fresh, run)
        if kind == "input_video" and isinstance(part.get("video_url"), str):
            return self._video(dict(part), run)
        return None

    # -- part kinds -----------------------------------------------------------------

    async def _image(self, part: JsonDict, fresh: bool, run: _Pass) -> JsonDict | None:
        url: str = part["image_url"]
        limit = self.limits.inline_max_bytes
        try:
            if (file_id := internal_file_id(url)) is not None:
                part["image_url"] = await _data_url(await self._read(file_id, limit))
            elif _is_http(url):
                if not fresh:
                    return part  # an older turn's link: not downloaded again
                got = await self._download(url, limit)
                if not got.media_type.startswith("image/"):
                    raise AttachmentError(f"the link is a {got.media_type} file, not an image")
                part["image_url"] = await _data_url_of(got.body, got.media_type)
                if self.limits.save_remote_file_urls:
                    await self._keep(got.body, got.media_type, _url_name(url, "image"), run)
            elif url[:5].lower() == "data:":
                if fresh and self.limits.save_file_data_content:
                    await self._keep_data_url(url, "image", run)
            else:
                raise AttachmentError("its address is neither a web link nor inline data")
        except (AttachmentError, DownloadError, StoredFileError) as exc:
            return self._left_out(run, "An image", exc)
        return part

    async def _file(self, part: JsonDict, fresh: bool, run: _Pass) -> JsonDict | None:
        name = part.get("filename") if isinstance(part.get("filename"), str) else None
        label = f"The file {name!r}" if name else "A file"
        limit = self.limits.inline_max_bytes
        try:
            for key in ("file_url", "file_data"):
                value = part.get(key)
                if not isinstance(value, str):
                    continue
                if (file_id := internal_file_id(value)) is not None:
                    stored = await self._read(file_id, limit)
                    _inline_file(part, await _data_url(stored), name or stored.filename)
                    return part
            data, url = part.get("file_data"), part.get("file_url")
            if isinstance(data, str) and _is_http(data):
                # A link given as data: fetched like one (the original's rule), or passed on.
                if not fresh:
                    part.pop("file_data")
                    part.setdefault("file_url", data)
                    return part
                got = await self._download(data, limit)
                _inline_file(
                    part,
                    await _data_url_of(got.body, got.media_type),
                    name or _url_name(data, "file"),
                )
                if self.limits.save_file_data_content:
                    await self._keep(got.body, got.media_type, part["filename"], run)
            elif isinstance(data, str) and data[:5].lower() == "data:":
                if fresh and self.limits.save_file_data_content:
                    await self._keep_data_url(data, name or "file", run)
            elif (
                isinstance(url, str)
                and _is_http(url)
                and fresh
                and self.limits.save_remote_file_urls
            ):
                got = await self._download(url, limit)
                _inline_file(
                    part,
                    await _data_url_of(got.body, got.media_type),
                    name or _url_name(url, "file"),
                )
                await self._keep(got.body, got.media_type, part["filename"], run)
        except (AttachmentError, DownloadError, StoredFileError) as exc:
            return self._left_out(run, label, exc)
        return part

    async def _video(self, part: JsonDict, run: _Pass) -> JsonDict | None:
        url: str = part["video_url"].strip()
        try:
            if (file_id := internal_file_id(url)) is not None:
                part["video_url"] = await _data_url(
                    await self._read(file_id, self.limits.video_max_bytes)
                )
            elif is_youtube(url) or url[:5].lower() == "data:":
                pass  # YouTube is what providers take; inline data was checked by the mapping
            elif _is_http(url):
                # Never downloaded, but the provider fetches it on our behalf: no private targets.
                await vet(
                    url,
                    resolver=self.resolver,
                    allow_http_hosts=self.limits.allow_http_hosts,
                    allow_loopback=self.limits.allow_loopback,
                )
            else:
                raise AttachmentError("its address is neither a web link nor inline data")
        except UnsafeUrl as exc:
            return self._left_out(
                run, "A video link", AttachmentError(f"it was refused: {exc.reason}")
            )
        except (AttachmentError, StoredFileError) as exc:
            return self._left_out(run, "A video", exc)
        return part

    # -- I/O ------------------------------------------------------------------------

    async def _read(self, file_id: str, limit: int) -> StoredFile:
        if self.store is None or self.owner is None:
            raise StoredFileError("Open WebUI's file store is not available to this pipe")
        async with self._slots:
            return await self.store.read(file_id, reader=self.owner, limit_bytes=limit)

    async def _download(self, url: str, limit: int) -> Downloaded:
        limit = min(limit, self.limits.remote_max_bytes)
        got = await self.fetcher.fetch(url, request_slots=self._slots, max_bytes=limit)
        if len(got.body) > limit:
            raise AttachmentError(
                f"it is {len(got.body) / 1048576:.1f} MB, over the {limit / 1048576:g} MB "
                "limit for inline attachments"
            )
        return got

    async def _keep_data_url(self, url: str, name: str, run: _Pass) -> None:
        # Decoding megabytes is CPU work: off the loop, like every other blocking step.
        parsed = await asyncio.to_thread(
            parse_data_url, url, limit_bytes=self.limits.inline_max_bytes, what=name
        )
        await self._keep(parsed.data, parsed.media_type, name, run)

    async def _keep(self, data: bytes, media_type: str, name: str, run: _Pass) -> None:
        """A copy into Open WebUI's files; a failure is logged, never a lost attachment."""
        if self.store is None or self.owner is None:
            return
        try:
            async with self._slots:
                file_id = await self.store.save(
                    data, media_type=media_type, filename=name, owner=self.owner
                )
        except StoredFileError as exc:
            log.warning("a copy of %s was not stored: %s", name, exc.reason)
        except Exception:  # storage back-ends raise their own types (S3, GCS, OS errors)
            log.exception("a copy of %s was not stored", name)
        else:
            run.stored.append(file_id)

    @staticmethod
    def _left_out(run: _Pass, label: str, exc: Exception) -> None:
        reason = getattr(exc, "reason", str(exc))
        run.notes.append(f"{label} was left out: {reason}.")


def _newest_user_index(items: Sequence[Mapping[str, Any]]) -> int | None:
    for i in range(len(items) - 1, -1, -1):
        if items[i].get("role") == "user":
            return i
    return None


def _is_http(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


async def _data_url(stored: StoredFile) -> str:
    return await _data_url_of(stored.data, stored.media_type)


async def _data_url_of(data: bytes, media_type: str) -> str:
    """``data`` as a ``data:`` URL, encoded in a worker thread (megabytes of CPU work)."""
    encoded = await asyncio.to_thread(base64.b64encode, data)
    return f"data:{media_type};base64,{encoded.decode('ascii')}"


def _inline_file(part: JsonDict, data_url: str, filename: str) -> None:
    """The file sent as its bytes: ``file_data`` with a name, no link to follow."""
    part.pop("file_url", None)
    part.pop("file_id", None)
    part["file_data"] = data_url
    part["filename"] = filename


def _url_name(url: str, fallback: str) -> str:
    path = urllib.parse.urlsplit(url).path
    name = posixpath.basename(urllib.parse.unquote(path))
    return name or fallback
