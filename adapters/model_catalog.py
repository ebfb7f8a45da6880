"""OpenRouter's model catalogue, as the Open WebUI pipe needs it.

(Skeleton: the ``ModelInfo`` record is the contract shared with the request
mapper and the pipe; the registry is filled in beside it.)
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ModelInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelInfo:
    """One catalogue entry, reduced to what the pipe decides with.

    Capabilities come from the catalogue only (``architecture.input_modalities``
    and ``supported_parameters``), never from a request.
    """

    #: OpenRouter's id, exactly as ``/models`` gave it ("openai/gpt-4o-2024-08-06").
    openrouter_id: str
    #: The Open WebUI-safe id ``pipes()`` exposes ("openai.gpt-4o-2024-08-06").
    sub_id: str
    name: str
    input_modalities: frozenset[str] = frozenset({"text"})
    output_modalities: frozenset[str] = frozenset({"text"})
    supported_parameters: frozenset[str] = frozenset()
    context_length: int | None = None
    #: ``top_provider.max_completion_tokens``.
    max_output_tokens: int | None = None
    #: ``pricing`` as given (USD per token or per request, as decimal strings).
    pricing: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def vision(self) -> bool:
        return "image" in self.input_modalities

    @property
    def file_input(self) -> bool:
        return "file" in self.input_modalities

    @property
    def audio_input(self) -> bool:
        return "audio" in self.input_modalities

    @property
    def video_input(self) -> bool:
        return "video" in self.input_modalities

    @property
    def reasoning(self) -> bool:
        return "reasoning" in self.supported_parameters

    @property
    def reasoning_summary(self) -> bool:
        return "include_reasoning" in self.supported_parameters

    @property
    def tools(self) -> bool:
        return bool({"tools", "tool_choice"} & self.supported_parameters)

    @property
    def structured_output(self) -> bool:
        return bool({"response_format", "structured_outputs"} & self.supported_parameters)

    @property
    def web_search(self) -> bool:
        """The model searches natively (or is priced for OpenRouter's web plugin)."""
        return "web_search_options" in self.supported_parameters or _positive(
            self.pricing.get("web_search")
        )


def _positive(price: str | None) -> bool:
    try:
        return price is not None and float(price) > 0
    except ValueError:
        return False
