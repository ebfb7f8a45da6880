"""The merged system and user valve values the request mapping reads."""

from __future__ import annotations

from dataclasses import dataclass

from orpipe.adapters.openwebui.image_selection import ImageSelection

__all__ = ["RequestSettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSettings:
    """The merged system and user valve values the mapping needs."""

    enable_reasoning: bool = True
    #: none | minimal | low | medium | high | xhigh (| max)
    reasoning_effort: str = "medium"
    #: auto | concise | detailed | disabled ("disabled" sends no summary request)
    reasoning_summary: str = "auto"
    #: Fill ``max_output_tokens`` from the catalogue when the user gave no limit.
    use_model_max_output_tokens: bool = False
    #: Honour the chat's web-search toggle with OpenRouter's web plugin.
    enable_web_search: bool = True
    #: OpenRouter ids or exposed sub ids for which an admin forces the web plugin.
    web_search_force_models: frozenset[str] = frozenset()
    web_search_max_results: int | None = 3
    #: MAX_INPUT_IMAGES_PER_REQUEST and IMAGE_INPUT_SELECTION (see ``image_selection``).
    max_input_images: int = 5
    image_selection: ImageSelection = "user_then_assistant"
    #: BASE64_MAX_SIZE_MB in bytes: the largest inline attachment sent.
    base64_max_bytes: int = 50 * 1024 * 1024
    #: VIDEO_MAX_SIZE_MB in bytes: the largest inline (data URL) video sent.
    video_max_bytes: int = 100 * 1024 * 1024
