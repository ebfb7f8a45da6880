"""Which output items a request stores as artifacts."""

from __future__ import annotations

import pytest

from orpipe.engine.artifacts import ArtifactContext


@pytest.mark.parametrize(
    ("context", "stored", "not_stored"),
    [
        (
            ArtifactContext(chat_id="c", message_id="m"),
            {"reasoning", "function_call", "function_call_output", "web_search_call", "mcp_call"},
            {"message", "image_generation_call"},
        ),
        (
            ArtifactContext(chat_id="c", message_id="m", reasoning="disabled"),
            {"function_call", "function_call_output"},
            {"reasoning", "message", "image_generation_call"},
        ),
        (
            ArtifactContext(chat_id="c", message_id="m", tool_results=False),
            {"reasoning"},
            {"function_call", "function_call_output", "web_search_call", "image_generation_call"},
        ),
        (
            ArtifactContext(chat_id="c", message_id="m", function_calls=False),
            {"reasoning", "web_search_call"},
            {"function_call", "function_call_output", "image_generation_call"},
        ),
    ],
)
def test_what_is_stored(context: ArtifactContext, stored: set[str], not_stored: set[str]) -> None:
    assert {t for t in stored | not_stored if context.wants(t)} == stored


def test_a_generated_image_is_never_an_artifact() -> None:
    # Megabytes of base64 that are never replayed (seed §K.2.21): the answer shows it.
    item = {"type": "image_generation_call", "id": "ig_1", "result": "iVBORw0KGgo" * 10_000}
    assert ArtifactContext(chat_id="c", message_id="m").artifact_for(item) is None
