"""The mock's ``/api/v1/models`` catalogue (contract 1.12), and which scenario a model picks.

Owns the catalogue (real-looking OpenRouter entries, plus one ``mock/<scenario>``
model per scenario), ``resolve_scenario`` (header > ``mock/<scenario>`` model >
catalogue entry), and bench variants: named parameter sets served as models
``mock/<scenario>:<name>`` (``parse_variant``, ``variant_of``,
``variant_models``), for clients that can only choose a model (Open WebUI's
own OpenAI connection). Deterministic data, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from orpipe.bench.mock_scenarios import (
    PARAM_PREFIX,
    SCENARIOS,
    STREAM_SCENARIOS,
    ScenarioError,
    parse_params,
)

__all__ = [
    "CATALOGUE",
    "VARIANT_NAME",
    "parse_variant",
    "resolve_scenario",
    "variant_models",
    "variant_of",
]


_CREATED: Final = 1_722_902_400  # a fixed unix time keeps the catalogue deterministic


def _model(
    model_id: str,
    name: str,
    *,
    context: int,
    max_out: int,
    prompt: str,
    completion: str,
    inputs: Sequence[str] = ("text",),
    params: Sequence[str] = (),
    reasoning: Mapping[str, Any] | None = None,
    extra_pricing: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    base = ["max_tokens", "temperature", "top_p", "stop", "seed", "response_format"]
    return {
        "id": model_id,
        "canonical_slug": model_id.split(":", maxsplit=1)[0],
        "hugging_face_id": None,
        "name": name,
        "created": _CREATED,
        "description": f"{name} (mock catalogue entry).",
        "context_length": context,
        "architecture": {
            "modality": ("text+image->text" if "image" in inputs else "text->text"),
            "input_modalities": list(inputs),
            "output_modalities": ["text"],
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
            "input_cache_read": "0",
            **(extra_pricing or {}),
        },
        "top_provider": {
            "context_length": context,
            "max_completion_tokens": max_out,
            "is_moderated": model_id.startswith("openai/"),
        },
        "per_request_limits": None,
        "supported_parameters": base + list(params),
        "default_parameters": {"temperature": None, "top_p": None, "frequency_penalty": None},
        "supported_voices": None,
        "links": {"details": f"/api/v1/models/{model_id.split(':', maxsplit=1)[0]}/endpoints"},
        "reasoning": reasoning,
        "expiration_date": None,
        "knowledge_cutoff": "2024-06-01",
    }


_TOOLS: Final = ("tools", "tool_choice", "parallel_tool_calls")
_REASONS: Final = ("reasoning", "include_reasoning", "reasoning_effort")
_EFFORTS: Final = ["low", "medium", "high"]


def _reasoning_info(*, mandatory: bool) -> dict[str, Any]:
    return {
        "mandatory": mandatory,
        "supported_efforts": _EFFORTS,
        "default_effort": "medium",
        "default_enabled": mandatory,
        "supports_max_tokens": True,
    }


def _build_catalogue() -> tuple[dict[str, Any], ...]:
    vision = ("text", "image", "file")
    gpt4o = {
        "context": 128_000,
        "max_out": 16_384,
        "prompt": "0.0000025",
        "completion": "0.00001",
        "inputs": vision,
        "params": _TOOLS,
        "extra_pricing": {"input_cache_read": "0.00000125"},
    }
    r1 = {
        "context": 163_840,
        "max_out": 32_768,
        "params": _REASONS,
        "reasoning": _reasoning_info(mandatory=True),
    }
    return (
        _model("openai/gpt-4o", "OpenAI: GPT-4o", **gpt4o),  # type: ignore[arg-type]
        _model(
            "openai/gpt-4o-2024-08-06", "OpenAI: GPT-4o (2024-08-06)", **gpt4o  # type: ignore[arg-type]
        ),
        _model(
            "openai/gpt-4o-mini", "OpenAI: GPT-4o-mini", context=128_000, max_out=16_384,
            prompt="0.00000015", completion="0.0000006", inputs=vision, params=_TOOLS,
        ),
        _model(
            "openai/o4-mini", "OpenAI: o4 Mini", context=200_000, max_out=100_000,
            prompt="0.0000011", completion="0.0000044", inputs=vision,
            params=(*_TOOLS, *_REASONS), reasoning=_reasoning_info(mandatory=True),
        ),
        _model(
            "anthropic/claude-sonnet-4", "Anthropic: Claude Sonnet 4", context=200_000,
            max_out=64_000, prompt="0.000003", completion="0.000015", inputs=vision,
            params=(*_TOOLS, *_REASONS), reasoning=_reasoning_info(mandatory=False),
            extra_pricing={"input_cache_read": "0.0000003", "input_cache_write": "0.00000375"},
        ),
        _model(
            "google/gemini-2.5-flash", "Google: Gemini 2.5 Flash", context=1_048_576,
            max_out=65_535, prompt="0.0000003", completion="0.0000025",
            inputs=("text", "image", "file", "audio", "video"), params=(*_TOOLS, *_REASONS),
            reasoning=_reasoning_info(mandatory=False),
        ),
        _model(
            "deepseek/deepseek-r1", "DeepSeek: R1", prompt="0.0000004",
            completion="0.000002", **r1,  # type: ignore[arg-type]
        ),
        _model(
            "deepseek/deepseek-r1:free", "DeepSeek: R1 (free)", prompt="0",
            completion="0", **r1,  # type: ignore[arg-type]
        ),
        _model(
            "meta-llama/llama-3.1-8b-instruct", "Meta: Llama 3.1 8B Instruct",
            context=131_072, max_out=8_192, prompt="0.00000002", completion="0.00000005",
        ),
        _model(
            "mistralai/mistral-small-3.2-24b-instruct", "Mistral: Mistral Small 3.2 24B",
            context=131_072, max_out=131_072, prompt="0.00000005", completion="0.0000001",
            params=_TOOLS,
        ),
        _model(
            "perplexity/sonar", "Perplexity: Sonar", context=127_072, max_out=8_000,
            prompt="0.000001", completion="0.000001", params=("web_search_options",),
            extra_pricing={"web_search": "0.005", "request": "0.005"},
        ),
    )  # fmt: skip


def _scenario_models() -> tuple[dict[str, Any], ...]:
    """One ``mock/<scenario>`` entry per streaming scenario, so a client that picks
    models from the catalogue (the Open WebUI pipe) can ask for any scenario."""
    entries = []
    for name in sorted(STREAM_SCENARIOS):
        thinking = name == "reasoning"
        # The image model takes every modality too, like the image-generating Geminis.
        inputs = ("text", "image", "file", "audio", "video") if name == "images" else ("text",)
        entries.append(
            _model(
                f"mock/{name}", f"Mock: {name}", context=32_000, max_out=4_096,
                prompt="0.000001", completion="0.000002", inputs=inputs,
                params=(*_TOOLS, *(_REASONS if thinking else ())),
                reasoning=_reasoning_info(mandatory=False) if thinking else None,
            )
        )  # fmt: skip
    return tuple(entries)


CATALOGUE: Final[tuple[dict[str, Any], ...]] = _build_catalogue() + _scenario_models()
_BY_ID: Final[Mapping[str, Mapping[str, Any]]] = {m["id"]: m for m in CATALOGUE}


def resolve_scenario(model: object, header: str | None) -> str:
    """Pick the scenario: header ``X-Mock-Scenario`` > ``mock/<scenario>`` model > catalogue.

    Catalogue models that support reasoning get ``reasoning``; every other model (including
    ids the catalogue does not know) gets ``text``. Raises ``ScenarioError``.
    """
    if header:
        name = header.strip()
        if name not in SCENARIOS:
            raise ScenarioError(f"unknown mock scenario {name!r} in X-Mock-Scenario")
        return name
    if isinstance(model, str) and model.startswith("mock/"):
        name = model[len("mock/") :].split(":")[0]
        if name not in SCENARIOS:
            raise ScenarioError(f"unknown mock scenario {name!r} in model {model!r}")
        return name
    entry = _BY_ID.get(model) if isinstance(model, str) else None
    if entry is not None and "reasoning" in entry["supported_parameters"]:
        return "reasoning"
    return "text"


# --------------------------------------------------------------------------------------------
# Bench variants: parameter sets a client picks by model id
# --------------------------------------------------------------------------------------------

#: A variant's name: what follows ``mock/<scenario>:`` in a model id.
VARIANT_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``"d20=tokens=200&tps=50"`` -> ``("d20", {"tokens": "200", "tps": "50"})``.

    The parameters are ``mock.*`` names without the prefix, checked like a request's
    (``ParamError``); a bad name or shape is a ``ValueError``.
    """
    name, sep, query = spec.partition("=")
    name = name.strip()
    if not sep or not VARIANT_NAME.fullmatch(name):
        raise ValueError(
            f"a variant is NAME=PARAM=VALUE&PARAM=VALUE with NAME of letters, digits, - or _; "
            f"got {spec!r}"
        )
    params: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"variant {name!r}: expected PARAM=VALUE, got {pair!r}")
        params[key.strip().removeprefix(PARAM_PREFIX)] = value.strip()
    parse_params({PARAM_PREFIX + key: value for key, value in params.items()})
    return name, params


def variant_of(model: object) -> str | None:
    """The variant a model id names (``mock/text:d20`` -> ``"d20"``), or None."""
    if not isinstance(model, str) or not model.startswith("mock/"):
        return None
    _, sep, name = model.partition(":")
    return name if sep and VARIANT_NAME.fullmatch(name) else None


def variant_models(names: Sequence[str], scenario: str = "text") -> tuple[dict[str, Any], ...]:
    """Catalogue entries ``mock/<scenario>:<name>``, each a copy of ``mock/<scenario>``."""
    base = _BY_ID[f"mock/{scenario}"]
    return tuple(
        {
            **base,
            "id": f"mock/{scenario}:{name}",
            "name": f"Mock: {scenario} ({name})",
            "canonical_slug": f"mock/{scenario}",
        }
        for name in names
    )
