"""ChatRequest is deeply frozen; body() is what OpenRouter expects."""

from __future__ import annotations

import dataclasses
import types

import pytest

from orpipe.engine.errors import UsageError
from orpipe.engine.messages import ChatRequest, freeze_json, thaw_json
from orpipe.engine.pipeline_messages import SseBatch, TextRun
from orpipe.engine.statistics import ActorCounters


def _request(**kwargs: object) -> ChatRequest:
    base: dict[str, object] = {
        "model": "openai/gpt-5",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ],
    }
    base.update(kwargs)
    return ChatRequest(**base)  # type: ignore[arg-type]


def test_request_is_deeply_frozen() -> None:
    options = {"reasoning": {"effort": "high"}, "tools": [{"type": "function", "name": "f"}]}
    source_input = [{"type": "message", "role": "user", "content": ["a"]}]
    request = _request(input=source_input, options=options)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.model = "other"  # type: ignore[misc]
    assert isinstance(request.input, tuple)
    assert isinstance(request.input[0], types.MappingProxyType)
    assert isinstance(request.input[0]["content"], tuple)
    assert isinstance(request.options, types.MappingProxyType)
    assert isinstance(request.options["tools"], tuple)
    with pytest.raises(TypeError):
        request.input[0]["role"] = "system"  # type: ignore[index]
    with pytest.raises(TypeError):
        request.options["reasoning"]["effort"] = "low"  # type: ignore[index]
    with pytest.raises(TypeError):
        request.options["new"] = 1  # type: ignore[index]
    # A copy: changing what the caller passed changes nothing.
    options["reasoning"]["effort"] = "low"
    source_input[0]["role"] = "system"
    source_input.append({"x": 1})
    assert request.options["reasoning"]["effort"] == "high"
    assert request.input[0]["role"] == "user"
    assert len(request.input) == 1


def test_body_is_streaming_and_drops_none_options() -> None:
    request = _request(
        instructions="Be brief.",
        options={
            "max_output_tokens": 100,
            "temperature": None,
            "metadata": {"k": None},
            "tools": [{"type": "function"}],
        },
    )
    body = request.body()
    assert body == {
        "model": "openai/gpt-5",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ],
        "stream": True,
        "instructions": "Be brief.",
        "max_output_tokens": 100,
        "metadata": {"k": None},
        "tools": [{"type": "function"}],
    }
    assert type(body["input"]) is list and type(body["input"][0]) is dict
    assert type(body["tools"]) is list
    body["input"].append("mutation")  # a thawed copy: the request is untouched
    assert len(request.input) == 1


def test_body_without_instructions_or_options() -> None:
    body = ChatRequest(model="m", input=()).body()
    assert body == {"model": "m", "input": [], "stream": True}


@pytest.mark.parametrize("name", ["model", "input", "instructions", "stream", "store"])
def test_reserved_option_names_are_rejected(name: str) -> None:
    with pytest.raises(UsageError) as info:
        _request(options={name: "x"})
    assert name in str(info.value)


def test_request_ids_are_unique_hex() -> None:
    ids = {ChatRequest(model="m", input=()).request_id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert ChatRequest(model="m", input=(), request_id="mine").request_id == "mine"


def test_freeze_and_thaw_round_trip() -> None:
    value = {"a": [1, {"b": (2, 3)}], "c": None, 4: "int key"}
    frozen = freeze_json(value)
    assert frozen == types.MappingProxyType(
        {"a": (1, types.MappingProxyType({"b": (2, 3)})), "c": None, "4": "int key"}
    )
    assert thaw_json(frozen) == {"a": [1, {"b": [2, 3]}], "c": None, "4": "int key"}


def test_pipeline_messages_are_frozen_slotted_keyword_only() -> None:
    batch = SseBatch(request_id="r", first_seq=0, payloads=(b"x",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.first_seq = 1  # type: ignore[misc]
    assert not hasattr(batch, "__dict__")
    with pytest.raises(TypeError):
        TextRun("r", "text", "x", 1)  # type: ignore[misc]


def test_actor_counters_report_counts_and_current_levels() -> None:
    counters = ActorCounters()
    counters.add("events", 3)
    counters.add("events")
    counters.level("held_events", 7)
    counters.level("held_events", 2)
    assert counters.snapshot() == {"events": 4, "now_held_events": 2}
