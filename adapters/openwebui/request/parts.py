"""A user message's content parts → Responses input parts, one small function per part type.

Each function does what needs no I/O: the model's modality, an inline
attachment's size before decoding (``adapters.openwebui.data_urls``), the
formats the Responses API takes. ``adapters.openwebui.intake`` then reads
Open WebUI's stored files, downloads or vets links, and keeps copies, on
Open WebUI's loop. What a model cannot take is skipped and counted in the
``Tally``, never sent to fail the request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.data_urls import AttachmentError, check_base64, check_data_url
from orpipe.adapters.openwebui.request.tally import (
    JsonDict,
    RequestMappingError,
    Tally,
    expect_mapping,
)

__all__ = ["user_parts"]

#: ``input_image.detail`` values (contract §1.3); anything else becomes "auto".
_IMAGE_DETAILS: Final = frozenset({"auto", "low", "high", "original"})
#: ``input_file`` fields passed through; at least one of ``_FILE_SOURCES`` must be present.
_FILE_FIELDS: Final = ("file_id", "file_data", "file_url", "filename")
_FILE_SOURCES: Final = frozenset({"file_id", "file_data", "file_url"})

PartMapper = Callable[[Mapping[str, Any], str, Tally], JsonDict | None]


def user_parts(
    content: list[Any] | tuple[Any, ...], where: str, model: ModelInfo, tally: Tally
) -> list[JsonDict]:
    """The parts the model can take, in order; the rest counted or noted in ``tally``."""
    parts = []
    for position, raw in enumerate(content):
        here = f"{where}.content[{position}]"
        # Some clients send a bare string for a text part.
        part = expect_mapping(
            {"type": "text", "text": raw} if isinstance(raw, str) else raw,
            here,
            "Content parts must be objects with a type.",
            noun="a content part",
        )
        kind = part.get("type")
        entry = _PART_MAPPERS.get(kind) if isinstance(kind, str) else None
        if entry is None:
            tally.unsupported[str(kind)] += 1
            continue
        needs, mapper = entry
        if needs is not None and needs not in model.input_modalities:
            # Counted, not checked: a part the model cannot take is never sent.
            tally.skipped[needs] += 1
            continue
        mapped = mapper(part, here, tally)
        if mapped is not None:
            parts.append(mapped)
    return parts


def _text_part(part: Mapping[str, Any], where: str, tally: Tally) -> JsonDict | None:
    text = part.get("text")
    if not isinstance(text, str):
        raise RequestMappingError(f"{where} is a text part without text", "Give it a text string.")
    return {"type": "input_text", "text": text} if text else None


def _image_part(part: Mapping[str, Any], where: str, tally: Tally) -> JsonDict | None:
    # Chat Completions nests {url, detail}; Responses and older clients give a bare string.
    source = part.get("image_url")
    if isinstance(source, Mapping):
        url, detail = source.get("url"), source.get("detail")
    else:
        url, detail = source, part.get("detail")
    if not isinstance(url, str) or not url:
        raise RequestMappingError(
            f"{where} is an image part without a URL", "Attach the image again."
        )
    if not tally.inline_ok(url, "image", tally.base64_max_bytes):
        return None
    return {
        "type": "input_image",
        "image_url": url,
        "detail": detail if detail in _IMAGE_DETAILS else "auto",
    }


def _file_part(part: Mapping[str, Any], where: str, tally: Tally) -> JsonDict | None:
    # Chat Completions nests the fields under "file"; Responses puts them on the part.
    nested = part.get("file")
    source = nested if isinstance(nested, Mapping) else part
    fields = {
        key: source[key] for key in _FILE_FIELDS if isinstance(source.get(key), str) and source[key]
    }
    if not _FILE_SOURCES & fields.keys():
        raise RequestMappingError(
            f"{where} is a file part without file_id, file_data or file_url",
            "Attach the file again.",
        )
    data = fields.get("file_data", "")
    if data[:5].lower() == "data:":
        name = tally.inline_name(f"file {fields.get('filename') or 'without a name'}")
        try:
            check_data_url(data, limit_bytes=tally.base64_max_bytes, what=name)
        except AttachmentError as exc:
            tally.refused(exc)
            return None
    return {"type": "input_file", **fields}


def _audio_part(part: Mapping[str, Any], where: str, tally: Tally) -> JsonDict | None:
    """Audio is sent inline (base64) as mp3 or wav; links and other formats are refused.

    Accepted: ``{data, format}``, or a ``data:audio/...;base64,`` URL as the
    data (its media type then gives the format).
    """
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else audio
    audio_format = audio.get("format") if isinstance(audio, Mapping) else None
    if isinstance(data, str) and data[:5].lower() == "data:":
        name = tally.inline_name("audio")
        try:
            media_type, data = check_data_url(data, limit_bytes=tally.base64_max_bytes, what=name)
        except AttachmentError as exc:
            tally.refused(exc)
            return None
        audio_format = audio_format or media_type
    if not isinstance(data, str) or not data or not isinstance(audio_format, str):
        raise RequestMappingError(
            f"{where} is an audio part without data and format",
            "Attach the recording again.",
        )
    if data[:8].lower().startswith(("http://", "https://")):
        tally.refused(AttachmentError("audio links are not supported; attach the recording"))
        return None
    fmt = _AUDIO_FORMATS.get(audio_format.lower())
    if fmt is None:
        tally.refused(
            AttachmentError(f"audio in {audio_format!r} is not supported; send mp3 or wav")
        )
        return None
    try:
        check_base64(data, limit_bytes=tally.base64_max_bytes, what=tally.inline_name("audio"))
    except AttachmentError as exc:
        tally.refused(exc)
        return None
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def _video_part(part: Mapping[str, Any], where: str, tally: Tally) -> JsonDict | None:
    """A video as ``input_video`` with its ``video_url``: a link or a data URL.

    Links are never downloaded: OpenRouter hands them to the provider (Gemini
    on AI Studio takes YouTube links only). The intake pass vets other links
    against the SSRF rules and inlines Open WebUI's own; a data URL is checked
    here against VIDEO_MAX_SIZE_MB before anything decodes it.
    """
    # Chat Completions nests {url}; the Responses shape gives a bare string.
    source = part.get("video_url")
    url = source.get("url") if isinstance(source, Mapping) else source
    if not isinstance(url, str) or not url.strip():
        raise RequestMappingError(
            f"{where} is a video part without a URL", "Attach the video again."
        )
    if not tally.inline_ok(url, "video", tally.video_max_bytes):
        return None
    return {"type": "input_video", "video_url": url.strip()}


#: Audio formats the Responses API takes, by the names clients use for them.
_AUDIO_FORMATS: Final = {
    "mp3": "mp3",
    "mpeg": "mp3",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "wav": "wav",
    "wave": "wav",
    "audio/wav": "wav",
    "audio/wave": "wav",
    "audio/x-wav": "wav",
}


#: Part type → (the input modality the catalogue must list for the model, None for
#: text; its mapper).
_PART_MAPPERS: Final[dict[str, tuple[str | None, PartMapper]]] = {
    "text": (None, _text_part),
    "input_text": (None, _text_part),
    "image_url": ("image", _image_part),
    "input_image": ("image", _image_part),
    "file": ("file", _file_part),
    "input_file": ("file", _file_part),
    "input_audio": ("audio", _audio_part),
    "video_url": ("video", _video_part),
    "input_video": ("video", _video_part),
}
