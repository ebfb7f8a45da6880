"""Deterministic scenario planning for the mock OpenRouter (no I/O, no clock).

This module owns *what* the mock sends:

- the scenario names and how a request picks one (``resolve_scenario``);
- the ``mock.*`` request parameters, their defaults and their validation (``parse_params``);
- the generated answer / reasoning text, citations, function calls and usage (``plan``);
- the pre-stream HTTP error envelopes (contract 1.11);
- which scenarios ``/api/v1/chat/completions`` serves (``CHAT_SCENARIOS``).

The words come from ``bench.mock_text``; the catalogue and the bench variants
(models that name a scenario and parameters) are ``bench.mock_catalogue``'s.

``bench.mock_openrouter`` only turns a ``ScenarioPlan`` into bytes on the wire and paces them,
so a test can call ``plan()`` with the same inputs and know exactly what the server sent.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from orpipe.bench.mock_text import (
    ASCII_WORDS,
    REASONING_WORDS,
    oversize_text,
    split_astral,
    splitmix,
    words,
)

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


#: Scenarios ``/api/v1/chat/completions`` serves: the answer's text deltas (and reasoning
#: deltas as ``delta.reasoning``); ``incomplete`` ends with ``finish_reason: "length"``.
CHAT_SCENARIOS: Final[frozenset[str]] = frozenset(
    {"text", "reasoning", "annotations", "incomplete"}
)


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
        shade = next(splitmix(seed, 100 + n)) & 0xFF
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
        reasoning = words(knobs.reasoning_tokens, knobs.seed, 1, REASONING_WORDS)

    calls: tuple[FunctionCall, ...] = ()
    if scenario == "tools":
        rounds_done = tool_outputs // knobs.calls
        if rounds_done < knobs.rounds:
            calls = _function_calls(knobs, rounds_done, tool_names)

    deltas: tuple[str, ...] = ()
    if not calls:
        deltas = words(knobs.tokens, knobs.seed, 0, ASCII_WORDS)
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
        oversize_delta=oversize_text(knobs.oversize_bytes) if scenario == "oversized" else "",
        http_error=http_error_for(scenario, knobs) if scenario in HTTP_ERROR_SCENARIOS else None,
    )
