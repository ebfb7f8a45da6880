"""Deterministic scenario planning for the mock OpenRouter (no I/O, no clock).

This module owns *what* the mock sends:

- the scenario names and how a request picks one (``resolve_scenario``);
- the ``mock.*`` request parameters, their defaults and their validation (``parse_params``);
- the generated answer / reasoning text, citations, function calls and usage (``plan``);
- the pre-stream HTTP error envelopes (contract 1.11);
- the ``/api/v1/models`` catalogue (contract 1.12);
- bench variants: named parameter sets served as models ``mock/<scenario>:<name>``
  (``parse_variant``, ``variant_of``, ``variant_models``), for clients that can only
  choose a model (Open WebUI's own OpenAI connection);
- which scenarios ``/api/v1/chat/completions`` serves (``CHAT_SCENARIOS``).

``bench.mock_openrouter`` only turns a ``ScenarioPlan`` into bytes on the wire and paces them,
so a test can call ``plan()`` with the same inputs and know exactly what the server sent.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

# --------------------------------------------------------------------------------------------
# Scenario names
# --------------------------------------------------------------------------------------------

#: Pre-stream HTTP error scenarios -> HTTP status.
HTTP_ERROR_SCENARIOS: Final[Mapping[str, int]] = {
    "http-400": 400,
    "http-401": 401,
    "http-402": 402,
    "http-403": 403,
    "http-408": 408,
    "http-429": 429,
    "http-500": 500,
    "http-502": 502,
    "http-503": 503,
    "http-524": 524,
    "http-529": 529,
}

STREAM_SCENARIOS: Final[frozenset[str]] = frozenset(
    {
        "text",
        "reasoning",
        "annotations",
        "tools",
        "images",
        "drop",
        "malformed",
        "invalid-utf8",
        "oversized",
        "stall",
        "failed",
        "error-event",
        "response-error",
        "incomplete",
        "no-terminal",
    }
)

SCENARIOS: Final[frozenset[str]] = STREAM_SCENARIOS | frozenset(HTTP_ERROR_SCENARIOS)

#: How a stream ends. "drop" = connection closed mid-body; "none" = no terminal event.
Terminal = Literal["completed", "incomplete", "failed", "error", "response.error", "none", "drop"]

_TERMINALS: Final[Mapping[str, Terminal]] = {
    "drop": "drop",
    "failed": "failed",
    "error-event": "error",
    "response-error": "response.error",
    "incomplete": "incomplete",
    "no-terminal": "none",
}

#: Scenarios whose answer is cut short after ``mock.error_after`` / ``mock.drop_after`` deltas.
_TRUNCATING: Final[frozenset[str]] = frozenset({"drop", "failed", "error-event", "response-error"})
#: Scenarios that inject one bad event after ``mock.bad_at`` deltas.
BAD_EVENT_SCENARIOS: Final[frozenset[str]] = frozenset({"malformed", "invalid-utf8", "oversized"})


class ScenarioError(ValueError):
    """The request names a scenario that does not exist (HTTP 400)."""


class ParamError(ValueError):
    """A ``mock.*`` metadata value is invalid (HTTP 400 naming the parameter)."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"invalid mock parameter 'mock.{name}': {problem}")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

ParamValue = int | float | str


@dataclass(frozen=True, slots=True)
class _Spec:
    default: ParamValue
    kind: Literal["int", "float", "str", "choice"]
    minimum: float | None = None
    choices: tuple[str, ...] = ()


PARAM_SPECS: Final[Mapping[str, _Spec]] = {
    # common to every streaming scenario
    "tokens": _Spec(40, "int", 0),
    "tps": _Spec(0.0, "float", 0),
    "events_per_write": _Spec(1, "int", 1),
    "seed": _Spec(0, "int", 0),
    "keepalive": _Spec("1", "choice", choices=("0", "1")),
    "split_surrogates": _Spec("0", "choice", choices=("0", "1")),
    "done": _Spec("1", "choice", choices=("0", "1")),
    "input_tokens": _Spec(25, "int", 0),
    "cached_tokens": _Spec(0, "int", 0),
    # HTTP error scenarios
    "fail_times": _Spec(-1, "int", 0),  # -1 (the default) = fail every time
    "attempt_key": _Spec("", "str"),
    "retry_after": _Spec(1, "int", 0),
    # reasoning
    "reasoning_tokens": _Spec(20, "int", 0),
    "reasoning_style": _Spec("summary", "choice", choices=("summary", "text")),
    # annotations
    "citations": _Spec(3, "int", 0),
    # generated images (scenario "images")
    "images": _Spec(1, "int", 0),
    # tools
    "calls": _Spec(2, "int", 1),
    "rounds": _Spec(1, "int", 0),
    # faults
    "drop_after": _Spec(10, "int", 0),
    "bad_at": _Spec(5, "int", 0),
    "oversize_bytes": _Spec(2 * 1024 * 1024, "int", 1),
    "stall_after": _Spec(0, "int", 0),
    "stall_s": _Spec(3600.0, "float", 0),
    "error_after": _Spec(5, "int", 0),
    "code_style": _Spec("string", "choice", choices=("string", "int")),
    "error_shape": _Spec("top", "choice", choices=("top", "nested")),
}

PARAM_PREFIX: Final = "mock."


def _convert(name: str, spec: _Spec, raw: str) -> ParamValue:
    if spec.kind == "str":
        return raw
    if spec.kind == "choice":
        if raw not in spec.choices:
            raise ParamError(name, f"expected one of {', '.join(spec.choices)}, got {raw!r}")
        return raw
    try:
        value: int | float = int(raw) if spec.kind == "int" else float(raw)
    except ValueError:
        raise ParamError(name, f"expected {spec.kind}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ParamError(name, f"expected a finite number, got {raw!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ParamError(name, f"must be >= {spec.minimum:g}, got {raw!r}")
    return value


def parse_params(metadata: Mapping[str, object] | None) -> dict[str, ParamValue]:
    """Validate the ``mock.*`` keys of a request's ``metadata``; return every parameter.

    Keys without the ``mock.`` prefix belong to the client and are ignored. An unknown
    ``mock.*`` key is an error too, so a typo in a bench config cannot go unnoticed.
    """
    params: dict[str, ParamValue] = {name: spec.default for name, spec in PARAM_SPECS.items()}
    if not metadata:
        return params
    for key, raw in metadata.items():
        if not key.startswith(PARAM_PREFIX):
            continue
        name = key[len(PARAM_PREFIX) :]
        spec = PARAM_SPECS.get(name)
        if spec is None:
            raise ParamError(name, "unknown parameter")
        if not isinstance(raw, str):
            raise ParamError(name, "metadata values must be strings")
        params[name] = _convert(name, spec, raw)
    return params


@dataclass(frozen=True, slots=True)
class Knobs:
    """The validated parameters of one request, typed (see ``PARAM_SPECS`` for meanings)."""

    tokens: int
    tps: float
    events_per_write: int
    seed: int
    keepalive: bool
    split_surrogates: bool
    done: bool
    input_tokens: int
    cached_tokens: int
    fail_times: int
    attempt_key: str
    retry_after: int
    reasoning_tokens: int
    reasoning_style: str
    citations: int
    images: int
    calls: int
    rounds: int
    drop_after: int
    bad_at: int
    oversize_bytes: int
    stall_after: int
    stall_s: float
    error_after: int
    code_style: str
    error_shape: str

    @classmethod
    def from_params(cls, p: Mapping[str, ParamValue]) -> Knobs:
        return cls(
            tokens=int(p["tokens"]),
            tps=float(p["tps"]),
            events_per_write=int(p["events_per_write"]),
            seed=int(p["seed"]),
            keepalive=p["keepalive"] == "1",
            split_surrogates=p["split_surrogates"] == "1",
            done=p["done"] == "1",
            input_tokens=int(p["input_tokens"]),
            cached_tokens=int(p["cached_tokens"]),
            fail_times=int(p["fail_times"]),
            attempt_key=str(p["attempt_key"]),
            retry_after=int(p["retry_after"]),
            reasoning_tokens=int(p["reasoning_tokens"]),
            reasoning_style=str(p["reasoning_style"]),
            citations=int(p["citations"]),
            images=int(p["images"]),
            calls=int(p["calls"]),
            rounds=int(p["rounds"]),
            drop_after=int(p["drop_after"]),
            bad_at=int(p["bad_at"]),
            oversize_bytes=int(p["oversize_bytes"]),
            stall_after=int(p["stall_after"]),
            stall_s=float(p["stall_s"]),
            error_after=int(p["error_after"]),
            code_style=str(p["code_style"]),
            error_shape=str(p["error_shape"]),
        )


# --------------------------------------------------------------------------------------------
# Deterministic text
# --------------------------------------------------------------------------------------------

_MASK64: Final = (1 << 64) - 1

_ASCII_WORDS: Final = (
    "the", "stream", "of", "tokens", "arrives", "in", "order", "and", "each", "delta",
    "carries", "a", "small", "piece", "answer", "while", "client", "joins", "them", "into",
    "text", "that", "user", "reads", "on", "screen", "without", "gaps", "or", "errors",
)  # fmt: skip

# Multi-byte and tricky graphemes: 2-, 3- and 4-byte UTF-8, a combining accent (e + U+0301),
# astral emoji (surrogate pairs in JSON), a ZWJ family and a flag (several code points each).
TRICKY_WORDS: Final = (
    "naïve",
    "日本語",
    "cafe\u0301",
    "😀",
    "Ελληνικά",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
    "déjà-vu",
    "Привет",
    "\U0001f1ef\U0001f1f5",
    "𝄞clef",
)

_REASONING_WORDS: Final = (
    "first", "consider", "what", "the", "user", "asked", "then", "check", "facts", "and",
    "plan", "a", "short", "reply", "step", "by", "so", "it", "is", "clear",
)  # fmt: skip


def _splitmix(seed: int, stream: int) -> Iterator[int]:
    """SplitMix64: a tiny PRNG that gives the same numbers on every Python version."""
    state = (seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) & _MASK64
    while True:
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        yield z ^ (z >> 31)


def _words(count: int, seed: int, stream: int, vocab: Sequence[str]) -> tuple[str, ...]:
    """``count`` tokens of "word ", every third one a tricky word (so all kinds appear)."""
    rng = _splitmix(seed, stream)
    out: list[str] = []
    for i in range(count):
        if i % 3 == 2:
            word = TRICKY_WORDS[(seed + i // 3) % len(TRICKY_WORDS)]
        else:
            word = vocab[next(rng) % len(vocab)]
        out.append(word + " ")
    return tuple(out)


def split_astral(deltas: Sequence[str]) -> tuple[str, ...]:
    """Cut every delta after the high surrogate of each astral character.

    The result holds lone surrogates (``"\\ud83d"`` ends one piece, ``"\\ude00"`` starts the
    next), which is how some upstreams split UTF-16 text; it can only be written as JSON
    ``\\uXXXX`` escapes. ``"".join(result)`` re-encoded with ``surrogatepass`` gives the input.
    """
    out: list[str] = []
    for delta in deltas:
        piece: list[str] = []
        for ch in delta:
            code = ord(ch)
            if code <= 0xFFFF:
                piece.append(ch)
                continue
            code -= 0x10000
            piece.append(chr(0xD800 + (code >> 10)))
            out.append("".join(piece))
            piece = [chr(0xDC00 + (code & 0x3FF))]
        out.append("".join(piece))
    return tuple(out)


def join_surrogates(text: str) -> str:
    """Undo ``split_astral`` on a concatenation (pairs lone surrogates back up)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")


def _oversize_text(size: int) -> str:
    unit = "oversized-delta "
    return (unit * (size // len(unit) + 1))[:size]


# --------------------------------------------------------------------------------------------
# HTTP errors (contract 1.11)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpError:
    status: int
    body: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def error_envelope(code: int | str, message: str, **extra: Any) -> dict[str, Any]:
    """OpenRouter's pre-stream error body ``{"error": {"code", "message", ...}}``."""
    return {"error": {"code": code, "message": message, **extra}}


def _provider_meta(raw: str) -> dict[str, Any]:
    return {"metadata": {"provider_name": "MockProvider", "raw": raw}}


def http_error_for(scenario: str, knobs: Knobs) -> HttpError:
    status = HTTP_ERROR_SCENARIOS[scenario]
    retry = (("Retry-After", str(knobs.retry_after)),)
    if status == 400:
        # The Responses overview's string-code form, with a top-level null metadata.
        body: dict[str, Any] = {
            "error": {"code": "invalid_prompt", "message": "Invalid prompt: rejected by mock"},
            "metadata": None,
        }
        return HttpError(400, body)
    messages: dict[int, tuple[str, dict[str, Any]]] = {
        401: ("User not found.", {}),
        402: ("Insufficient credits. Add more using https://openrouter.ai/credits", {}),
        403: (
            "Input was flagged by moderation",
            {
                "metadata": {
                    "reasons": ["mock"],
                    "flagged_input": "flagged text",
                    "provider_name": "MockProvider",
                    "model_slug": "mock/text",
                }
            },
        ),
        408: ("Request timed out", {}),
        429: ("Rate limit exceeded", {}),
        500: ("Internal Server Error", {}),
        502: ("Provider returned error", _provider_meta('{"error":"upstream failure"}')),
        503: ("No available provider could serve the request", {}),
        524: ("Provider timed out", {}),
        529: ("Provider returned error", _provider_meta('{"error":"overloaded"}')),
    }
    message, extra = messages[status]
    headers = retry if status in (429, 503) else ()
    return HttpError(status, error_envelope(status, message, **extra), headers)


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------

FunctionCall = tuple[str, str, str]  # (call_id, name, arguments JSON string)

_CITIES: Final = ("Paris", "Tōkyō", "Zürich", "São Paulo", "Reykjavík")

#: Mock prices (USD per token) used for ``usage.cost``.
PROMPT_PRICE: Final = 2.5e-6
COMPLETION_PRICE: Final = 1.0e-5


@dataclass(frozen=True, slots=True)
class ScenarioPlan:
    """Everything the server will send for one request, decided up front.

    ``text_deltas`` are the answer's deltas as real strings and ``text`` their concatenation:
    exactly what a correct client shows (the injected bad event of malformed / invalid-utf8 /
    oversized is *not* part of it). ``wire_deltas`` are the same deltas as written on the wire
    (equal to ``text_deltas`` unless ``split_surrogates``). ``fault_at`` is the number of wire
    deltas of the message written before the scenario's fault (bad event, stall, drop,
    in-band error); ``None`` when there is none in the message.
    """

    scenario: str
    knobs: Knobs
    text_deltas: tuple[str, ...]
    text: str
    wire_deltas: tuple[str, ...]
    reasoning_deltas: tuple[str, ...]
    reasoning_text: str
    reasoning_style: str
    citations: tuple[tuple[str, str], ...]
    function_calls: tuple[FunctionCall, ...]
    #: Base64 PNGs sent as ``image_generation_call`` items before the message ("images").
    images: tuple[str, ...]
    usage: Mapping[str, Any]
    terminal: Terminal
    fault_at: int | None
    stall_before_in_progress: bool
    oversize_delta: str
    http_error: HttpError | None

    # Shortcuts to the knobs most callers want (derived, not stored twice).
    @property
    def tokens(self) -> int:
        return self.knobs.tokens

    @property
    def tps(self) -> float:
        return self.knobs.tps

    @property
    def events_per_write(self) -> int:
        return self.knobs.events_per_write

    @property
    def seed(self) -> int:
        return self.knobs.seed

    @property
    def keepalive(self) -> bool:
        return self.knobs.keepalive

    @property
    def split_surrogates(self) -> bool:
        return self.knobs.split_surrogates


def _citations(count: int) -> tuple[tuple[str, str], ...]:
    cites = [
        (f"https://example.com/source-{k}", f"Source {k}: naïve streams 日本語")
        for k in range(1, count + 1)
    ]
    if count >= 2:
        # One duplicate URL (different title) so a client's de-duplication is exercised.
        cites[-1] = (cites[0][0], "Source 1 (again)")
    return tuple(cites)


def _function_calls(
    knobs: Knobs, round_index: int, tool_names: Sequence[str]
) -> tuple[FunctionCall, ...]:
    calls: list[FunctionCall] = []
    for i in range(knobs.calls):
        n = round_index * knobs.calls + i + 1  # unique across rounds of one conversation
        name = tool_names[i % len(tool_names)] if tool_names else "get_weather"
        args = {"location": _CITIES[(knobs.seed + n) % len(_CITIES)], "unit": "celsius", "n": n}
        calls.append((f"call_{n}", name, json.dumps(args, ensure_ascii=False)))
    return tuple(calls)


def _images(count: int, seed: int) -> tuple[str, ...]:
    """``count`` distinct, valid PNG files (8x8 grey squares), base64-encoded.

    Each is a real PNG (signature, IHDR, one zlib IDAT, IEND, correct CRCs), so a
    client that stores or shows it handles a real image; the shade differs per
    image, so every one is distinct.
    """
    out = []
    for n in range(count):
        shade = next(_splitmix(seed, 100 + n)) & 0xFF
        raw = b"".join(b"\x00" + bytes([shade]) * 8 for _ in range(8))  # filter 0, 8 grey pixels
        ihdr = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
        png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
        out.append(base64.b64encode(png + _chunk(b"IEND", b"")).decode("ascii"))
    return tuple(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _usage(knobs: Knobs, output_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    input_tokens = knobs.input_tokens
    input_cost = input_tokens * PROMPT_PRICE
    output_cost = output_tokens * COMPLETION_PRICE
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": min(knobs.cached_tokens, input_tokens)},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
        "cost": round(input_cost + output_cost, 12),
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_input_cost": round(input_cost, 12),
            "upstream_inference_output_cost": round(output_cost, 12),
        },
        "is_byok": False,
    }


def plan(
    scenario: str,
    params: Mapping[str, str],
    *,
    tool_outputs: int = 0,
    tool_names: Sequence[str] = (),
) -> ScenarioPlan:
    """Decide what to send for ``scenario`` given the request's ``metadata`` (``mock.*`` keys).

    ``tool_outputs`` is the number of ``function_call_output`` items in the request's input and
    ``tool_names`` the names of its function tools; both matter only to ``tools``.
    Raises ``ScenarioError`` / ``ParamError``.
    """
    if scenario not in SCENARIOS:
        raise ScenarioError(f"unknown mock scenario {scenario!r}")
    knobs = Knobs.from_params(parse_params(params))

    reasoning: tuple[str, ...] = ()
    if scenario == "reasoning":
        reasoning = _words(knobs.reasoning_tokens, knobs.seed, 1, _REASONING_WORDS)

    calls: tuple[FunctionCall, ...] = ()
    if scenario == "tools":
        rounds_done = tool_outputs // knobs.calls
        if rounds_done < knobs.rounds:
            calls = _function_calls(knobs, rounds_done, tool_names)

    deltas: tuple[str, ...] = ()
    if not calls:
        deltas = _words(knobs.tokens, knobs.seed, 0, _ASCII_WORDS)
        if scenario == "drop":
            deltas = deltas[: knobs.drop_after]
        elif scenario in _TRUNCATING:
            deltas = deltas[: knobs.error_after]
    wire = split_astral(deltas) if knobs.split_surrogates else deltas

    def wire_index(n: int) -> int:
        # split_astral works delta by delta, so splitting a prefix gives a prefix of the wire.
        prefix = deltas[:n]
        return len(split_astral(prefix)) if knobs.split_surrogates else len(prefix)

    fault_at: int | None = None
    if scenario in BAD_EVENT_SCENARIOS:
        fault_at = wire_index(knobs.bad_at)
    elif scenario == "stall" and knobs.stall_after > 0:
        fault_at = wire_index(knobs.stall_after)
    elif scenario in _TRUNCATING:
        fault_at = len(wire)

    call_tokens = sum(len(args) // 4 for _, _, args in calls)
    usage = _usage(knobs, len(deltas) + len(reasoning) + call_tokens, len(reasoning))
    return ScenarioPlan(
        scenario=scenario,
        knobs=knobs,
        text_deltas=deltas,
        text="".join(deltas),
        wire_deltas=wire,
        reasoning_deltas=reasoning,
        reasoning_text="".join(reasoning),
        reasoning_style=knobs.reasoning_style,
        citations=_citations(knobs.citations) if scenario == "annotations" else (),
        function_calls=calls,
        images=_images(knobs.images, knobs.seed) if scenario == "images" else (),
        usage=usage,
        terminal=_TERMINALS.get(scenario, "completed"),
        fault_at=fault_at,
        stall_before_in_progress=scenario == "stall" and knobs.stall_after == 0,
        oversize_delta=_oversize_text(knobs.oversize_bytes) if scenario == "oversized" else "",
        http_error=http_error_for(scenario, knobs) if scenario in HTTP_ERROR_SCENARIOS else None,
    )


# --------------------------------------------------------------------------------------------
# Model catalogue (contract 1.12) and scenario resolution
# --------------------------------------------------------------------------------------------

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

#: Scenarios ``/api/v1/chat/completions`` serves: the answer's text deltas (and reasoning
#: deltas as ``delta.reasoning``); ``incomplete`` ends with ``finish_reason: "length"``.
CHAT_SCENARIOS: Final[frozenset[str]] = frozenset(
    {"text", "reasoning", "annotations", "incomplete"}
)


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
