"""Images the model generates, stored in Open WebUI's files and shown as Markdown.

An ``image_generation_call`` output item carries its picture in ``result``:
raw base64 (what the Responses API sends), a ``data:`` URL, or a link. The
engine never stores these items as artifacts (``engine.artifacts``), so they
are never replayed as megabytes of base64 either. Here, on Open WebUI's loop,
``GeneratedImages.shown`` turns each one into answer text:

* the bytes (decoded with the size checked first, or downloaded through the
  SSRF-safe downloader) are stored as ``generated-image-<uuid>.<ext>``, owned
  by the chat's user (or the fallback owner), and the answer shows
  ``![Generated image](/api/v1/files/<id>/content)``;
* when that is not possible (no file store, too large, unreadable), the
  answer says so in one italic line instead of silently losing the image.

What is shown is text in the answer, so Open WebUI keeps the image in the
chat's history as a link to its own file, never as inline data.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orpipe.adapters.openwebui.data_urls import AttachmentError, decode_base64, parse_data_url
from orpipe.adapters.openwebui.downloader import DownloadError
from orpipe.adapters.openwebui.files import StoredFileError, content_url
from orpipe.adapters.openwebui.intake import FileStore, UrlFetcher
from orpipe.engine.messages import OutboundEvent, OutputItem, TextDelta

__all__ = ["GeneratedImages"]

log = logging.getLogger("orpipe.owui")

_FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


@dataclass(eq=False, kw_only=True)
class GeneratedImages:
    """Per answer: stores the images it generates (see the module docstring)."""

    #: Open WebUI's files; None where there are none (then each image says so).
    store: FileStore | None
    #: The chat's user, who owns the stored images; None for the fallback owner.
    user: Mapping[str, Any] | None
    #: For an image upstream hands over as a link; None where nothing may be fetched.
    fetcher: UrlFetcher | None
    max_bytes: int
    #: Ids of the files stored so far, in the answer's order.
    stored: list[str] = field(default_factory=list, init=False)

    async def shown(self, event: OutboundEvent) -> OutboundEvent:
        """``event``, or for a generated image the Markdown that shows it."""
        if not isinstance(event, OutputItem) or event.item.get("type") != "image_generation_call":
            return event
        return TextDelta(request_id=event.request_id, text=await self._markdown(event.item))

    async def _markdown(self, item: Mapping[str, Any]) -> str:
        result = item.get("result")
        if not isinstance(result, str) or not result.strip():
            return ""  # a call that produced nothing (failed upstream): nothing to show
        try:
            data, media_type = await self._bytes(result.strip(), item.get("output_format"))
            if self.store is None:
                raise StoredFileError("Open WebUI's file store is not available to this pipe")
            owner = await self.store.owner_for(self.user)
            extension = media_type.rsplit("/", 1)[-1].replace("jpeg", "jpg")
            file_id = await self.store.save(
                data,
                media_type=media_type,
                filename=f"generated-image-{uuid.uuid4().hex[:12]}.{extension}",
                owner=owner,
            )
        except (AttachmentError, DownloadError, StoredFileError) as exc:
            log.warning("a generated image was not stored: %s", exc.reason)
            return f"\n\n*A generated image could not be shown: {exc.reason}.*\n\n"
        self.stored.append(file_id)
        return f"\n\n![Generated image]({content_url(file_id)})\n\n"

    async def _bytes(self, result: str, output_format: Any) -> tuple[bytes, str]:
        what = "the generated image"
        if result[:5].lower() == "data:":
            # Decoding is CPU work on megabytes: a worker thread, not the event loop.
            parsed = await asyncio.to_thread(
                parse_data_url, result, limit_bytes=self.max_bytes, what=what
            )
            return parsed.data, parsed.media_type
        if result[:8].lower().startswith(("https://", "http://")):
            if self.fetcher is None:
                raise AttachmentError("its link cannot be fetched here")
            got = await self.fetcher.fetch(result, max_bytes=self.max_bytes)
            if len(got.body) > self.max_bytes:
                raise AttachmentError(f"it is larger than {self.max_bytes / 1048576:g} MB")
            return got.body, got.media_type
        media_type = _FORMATS.get(str(output_format or "png").lower(), "image/png")
        data = await asyncio.to_thread(decode_base64, result, limit_bytes=self.max_bytes, what=what)
        return data, media_type
