"""Open WebUI chat body → ChatRequest: every mapping rule, happy and unhappy."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orpipe.adapters.openrouter.catalogue import ModelInfo
from orpipe.adapters.openwebui.request import (
    MappedRequest,
    RequestMappingError,
    RequestSettings,
    build_request,
    strip_rendered_blocks,
)
from orpipe.engine.errors import EngineError, UsageError

VISION = ModelInfo(
    openrouter_id="openai/gpt-4o",
    sub_id="openai.gpt-4o",
    name="OpenAI: GPT-4o",
    input_modalities=frozenset({"text", "image", "file"}),
    supported_parameters=frozenset(
        {"max_tokens", "temperature", "top_p", "tools", "tool_choice", "response_format"}
    ),
    context_length=128_000,
    max_output_tokens=16_384,
)
REASONER = ModelInfo(
    openrouter_id="deepseek/deepseek-r1",
    sub_id="deepseek.deepseek-r1",
    name="DeepSeek: R1",
    supported_parameters=frozenset({"reasoning", "include_reasoning", "max_tokens"}),
    context_length=163_840,
    max_output_tokens=32_768,
)
PLAIN = ModelInfo(
    openrouter_id="mistralai/mistral-7b-instruct",
    sub_id="mistralai.mistral-7b-instruct",
    name="Mistral: Mistral 7B Instruct",
    max_output_tokens=4_096,
)
WEB_PRICED = ModelInfo(
    openrouter_id="perplexity/sonar",
    sub_id="perplexity.sonar",
    name="Perplexity: Sonar",
    supported_parameters=frozenset({"web_search_options"}),
    pricing={"prompt": "0.000001", "completion": "0.000001", "web_search": "0.005"},
)
AUDIO = ModelInfo(
    openrouter_id="google/gemini-2.5-flash",
    sub_id="google.gemini-2.5-flash",
    name="Google: Gemini 2.5 Flash",
    input_modalities=frozenset({"text", "image", "file", "audio"}),
)

DEFAULTS = RequestSettings()
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"

REASONING_BLOCK = (
    '<details type="reasoning" done="true" duration="4">\n'
    "<summary>Thought for 4 seconds</summary>\n"
    "&gt; The user greets me. I should greet back.\n"
    "</details>"
)
TOOL_BLOCK = (
    '<details type="tool_calls" done="true" id="call_1" name="get_weather" '
    'arguments="{&quot;city&quot;: &quot;Oslo&quot;}" result="&quot;4 °C&quot;">\n'
    "<summary>Tool Executed</summary>\n"
    "</details>\n"
)


def owui_body(**overrides: Any) -> dict[str, Any]:
    """A body as Open WebUI 0.12.4 hands it to a pipe (contract §2.6)."""
    body: dict[str, Any] = {
        "stream": True,
        "model": "orpipe.openai.gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Today is 2025-06-01."},
            {"role": "user", "content": "Hi there"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": PNG}},
                ],
            },
        ],
        "temperature": 0.7,
        "stream_options": {"include_usage": True},
    }
    body.update(overrides)
    return body


def build(
    body: Mapping[str, Any],
    model: ModelInfo = VISION,
    settings: RequestSettings = DEFAULTS,
    **kwargs: Any,
) -> MappedRequest:
    return build_request(body, model=model, settings=settings, **kwargs)


def sent(mapped: MappedRequest) -> dict[str, Any]:
    """The body exactly as it would go upstream, through a JSON round trip."""
    return dict(json.loads(json.dumps(mapped.request.body())))


def user_turn(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


def message_items(body: Mapping[str, Any], role: str) -> list[dict[str, Any]]:
    return [item for item in body["input"] if item.get("role") == role]


# --------------------------------------------------------------------------
# The request as a whole
# --------------------------------------------------------------------------


def test_a_realistic_body_maps_to_a_streaming_json_request() -> None:
    mapped = build(owui_body(), user_id="user-7", request_id="req-1")
    body = sent(mapped)
    assert body["model"] == "openai/gpt-4o"
    assert body["stream"] is True
    assert "store" not in body
    assert "instructions" not in body
    assert body["temperature"] == 0.7
    assert [(item["type"], item["role"]) for item in body["input"]] == [
        ("message", "system"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert body["input"][3]["content"] == [
        {"type": "input_text", "text": "What is in this picture?"},
        {"type": "input_image", "image_url": PNG, "detail": "auto"},
    ]
    assert mapped.request.request_id == "req-1"
    assert mapped.request.user_id == "user-7"
    assert mapped.request.instructions is None
    assert mapped.notes == ()
    assert mapped.dropped == ("stream", "stream_options")


def test_the_openrouter_id_is_sent_never_the_exposed_one() -> None:
    mapped = build(owui_body(model="orpipe.deepseek.deepseek-r1"), model=REASONER)
    assert mapped.request.model == "deepseek/deepseek-r1"
    assert "orpipe." not in json.dumps(mapped.request.body())


def test_a_request_id_is_generated_when_none_is_given() -> None:
    first, second = build(owui_body()), build(owui_body())
    assert len(first.request.request_id) == 16
    assert first.request.request_id != second.request.request_id


def test_the_body_passed_in_is_not_changed() -> None:
    body = owui_body(response_format={"type": "json_object"}, max_tokens=100)
    before = copy.deepcopy(body)
    build(body)
    assert body == before


def test_unused_keys_are_dropped_and_listed_sorted() -> None:
    body = owui_body(
        user={"id": "u1", "email": "a@example.com"},
        features={"web_search": False},
        files=[{"type": "file", "id": "f1"}],
        tools=[{"type": "function", "function": {"name": "get_weather"}}],
        tool_choice="auto",
        functions=None,  # None asks for nothing, so it is not "dropped"
        metadata={"chat_id": "c1"},
        seed=42,
        stop=["\n\n"],
        n=1,
        logit_bias={"50256": -100},
        frequency_penalty=0.5,
        presence_penalty=0.2,
        logprobs=True,
        top_logprobs=3,
        top_k=40,
        min_p=0.05,
    )
    mapped = build(body)
    assert list(mapped.dropped) == sorted(mapped.dropped)
    assert set(mapped.dropped) == {
        "features",
        "files",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "metadata",
        "min_p",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "tool_choice",
        "tools",
        "top_k",
        "top_logprobs",
        "user",
    }
    upstream = sent(mapped)
    for key in set(mapped.dropped) - {"stream"}:
        assert key not in upstream
    # The body's own stream flag is not what decides: the engine always streams.
    assert upstream["stream"] is True
    # The user's identity never goes upstream (privacy).
    assert "a@example.com" not in json.dumps(upstream)


# --------------------------------------------------------------------------
# System and developer messages
# --------------------------------------------------------------------------


def test_system_and_developer_messages_stay_items_in_order() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "System rules."},
            {"role": "user", "content": "First question"},
            {"role": "developer", "content": "Answer in French."},
            {"role": "user", "content": "Second question"},
        ]
    }
    upstream = sent(build(body))
    assert [(item["role"], item["content"][0]["text"]) for item in upstream["input"]] == [
        ("system", "System rules."),
        ("user", "First question"),
        ("developer", "Answer in French."),
        ("user", "Second question"),
    ]
    assert upstream["input"][0] == {
        "type": "message",
        "role": "system",
        "content": [{"type": "input_text", "text": "System rules."}],
    }
    # Not folded into user text, and no top-level instructions.
    assert "instructions" not in upstream
    for item in message_items(upstream, "user"):
        assert "rules" not in item["content"][0]["text"]


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("Be brief.", "Be brief."),
        ([{"type": "text", "text": "Be brief."}], "Be brief."),
        ([{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}], "Be\nbrief."),
        ([{"type": "input_text", "text": "Be brief."}], "Be brief."),
        (["Be brief."], "Be brief."),
        ({"type": "text", "text": "Be brief."}, "Be brief."),
        ({"text": "Be brief."}, "Be brief."),
        (
            [{"type": "text", "text": "Be brief."}, {"type": "image_url", "image_url": PNG}],
            "Be brief.",
        ),
    ],
)
def test_system_text_is_extracted_from_any_shape(content: Any, text: str) -> None:
    body = {"messages": [{"role": "system", "content": content}, {"role": "user", "content": "x"}]}
    system = sent(build(body))["input"][0]
    assert system["role"] == "system"
    assert system["content"] == [{"type": "input_text", "text": text}]


@pytest.mark.parametrize(
    "content", ["", "   ", None, [], [{"type": "image_url", "image_url": PNG}]]
)
def test_an_empty_system_message_is_omitted(content: Any) -> None:
    body = {"messages": [{"role": "system", "content": content}, {"role": "user", "content": "x"}]}
    assert [item["role"] for item in sent(build(body))["input"]] == ["user"]


# --------------------------------------------------------------------------
# User messages and their parts
# --------------------------------------------------------------------------


def test_a_user_string_becomes_one_input_text() -> None:
    upstream = sent(build(user_turn("What is 2 + 2?")))
    assert upstream["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "What is 2 + 2?"}],
        }
    ]


@settings(max_examples=150)
@given(text=st.text(min_size=1))
def test_any_user_text_survives_unchanged(text: str) -> None:
    upstream = sent(build(user_turn(text)))
    assert upstream["input"][0]["content"] == [{"type": "input_text", "text": text}]
    as_part = sent(build(user_turn([{"type": "text", "text": text}])))
    assert as_part["input"][0]["content"] == [{"type": "input_text", "text": text}]


@pytest.mark.parametrize(
    ("part", "url", "detail"),
    [
        ({"type": "image_url", "image_url": {"url": PNG}}, PNG, "auto"),
        ({"type": "image_url", "image_url": {"url": PNG, "detail": "high"}}, PNG, "high"),
        ({"type": "image_url", "image_url": {"url": PNG, "detail": "weird"}}, PNG, "auto"),
        (
            {"type": "image_url", "image_url": "https://x.test/a.png"},
            "https://x.test/a.png",
            "auto",
        ),
        ({"type": "input_image", "image_url": PNG, "detail": "low"}, PNG, "low"),
    ],
)
def test_images_reach_a_vision_model(part: dict[str, Any], url: str, detail: str) -> None:
    mapped = build(user_turn([{"type": "text", "text": "Look"}, part]))
    assert sent(mapped)["input"][0]["content"][1] == {
        "type": "input_image",
        "image_url": url,
        "detail": detail,
    }
    assert mapped.notes == ()


def test_images_are_skipped_for_a_model_without_vision_with_a_note() -> None:
    image = {"type": "image_url", "image_url": {"url": PNG}}
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Compare"}, image, image]},
        ]
    }
    mapped = build(body, model=PLAIN)
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "Compare"}]
    assert mapped.notes == (
        "Mistral: Mistral 7B Instruct does not accept images; 2 images skipped.",
    )
    assert "input_image" not in json.dumps(mapped.request.body())


def test_an_image_only_turn_for_a_non_vision_model_is_omitted() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
        ]
    }
    mapped = build(body, model=PLAIN)
    assert len(mapped.request.input) == 1
    assert mapped.notes == (
        "Mistral: Mistral 7B Instruct does not accept images; 1 image skipped.",
    )


def test_nothing_left_to_send_is_an_error_naming_the_skipped_images() -> None:
    body = user_turn([{"type": "image_url", "image_url": {"url": PNG}}])
    with pytest.raises(RequestMappingError, match="does not accept images"):
        build(body, model=PLAIN)


@pytest.mark.parametrize(
    "part",
    [
        {
            "type": "file",
            "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        },
        {
            "type": "input_file",
            "filename": "a.pdf",
            "file_data": "data:application/pdf;base64,JVBERi0=",
        },
    ],
)
def test_files_reach_a_file_model_in_the_responses_shape(part: dict[str, Any]) -> None:
    mapped = build(user_turn([{"type": "text", "text": "Summarise"}, part]))
    assert sent(mapped)["input"][0]["content"][1] == {
        "type": "input_file",
        "filename": "a.pdf",
        "file_data": "data:application/pdf;base64,JVBERi0=",
    }


def test_file_ids_and_urls_pass_through() -> None:
    parts = [
        {"type": "input_file", "file_id": "file-abc"},
        {"type": "input_file", "file_url": "https://x.test/a.pdf", "filename": "a.pdf"},
    ]
    content = sent(build(user_turn(parts)))["input"][0]["content"]
    assert content == [
        {"type": "input_file", "file_id": "file-abc"},
        {"type": "input_file", "file_url": "https://x.test/a.pdf", "filename": "a.pdf"},
    ]


def test_files_and_audio_are_skipped_for_a_plain_model_with_notes() -> None:
    parts = [
        {"type": "text", "text": "Here"},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]
    mapped = build(user_turn(parts), model=PLAIN)
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "Here"}]
    assert mapped.notes == (
        "Mistral: Mistral 7B Instruct does not accept files; 1 file skipped.",
        "Mistral: Mistral 7B Instruct does not accept audio; 2 audio clips skipped.",
    )


def test_audio_reaches_an_audio_model() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    content = sent(build(user_turn([part]), model=AUDIO))["input"][0]["content"]
    assert content == [part]


def test_unsupported_part_types_are_skipped_with_a_note() -> None:
    parts = [
        {"type": "text", "text": "Look"},
        {"type": "hologram", "hologram": {"url": "https://x.test/h.holo"}},
    ]
    mapped = build(user_turn(parts))
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "Look"}]
    assert mapped.notes == ("1 attachment of an unsupported kind (hologram) skipped.",)


VIDEO = ModelInfo(
    openrouter_id="google/gemini-2.5-pro",
    sub_id="google.gemini-2.5-pro",
    name="Google: Gemini 2.5 Pro",
    input_modalities=frozenset({"text", "image", "video"}),
)


@pytest.mark.parametrize(
    "part",
    [
        {"type": "video_url", "video_url": {"url": "https://youtu.be/dQw4w9WgXcQ"}},
        {"type": "input_video", "video_url": " https://youtu.be/dQw4w9WgXcQ "},
    ],
)
def test_video_parts_become_input_video_with_its_url(part: dict[str, Any]) -> None:
    content = sent(build(user_turn([part]), model=VIDEO))["input"][0]["content"]
    assert content == [{"type": "input_video", "video_url": "https://youtu.be/dQw4w9WgXcQ"}]


def test_video_is_skipped_for_a_model_without_video_with_a_note() -> None:
    parts = [
        {"type": "text", "text": "Watch"},
        {"type": "video_url", "video_url": {"url": "https://youtu.be/a"}},
        {"type": "video_url", "video_url": {"url": "https://youtu.be/b"}},
    ]
    mapped = build(user_turn(parts))
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "Watch"}]
    assert mapped.notes == ("OpenAI: GPT-4o does not accept video; 2 videos skipped.",)


def test_an_inline_video_over_video_max_size_is_refused_before_decoding() -> None:
    payload = "A" * 1_398_104  # decodes to 1,048,578 bytes: just over 1 MiB
    parts = [
        {"type": "text", "text": "Watch"},
        {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{payload}"}},
    ]
    settings = RequestSettings(video_max_bytes=1024 * 1024)
    mapped = build(user_turn(parts), model=VIDEO, settings=settings)
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "Watch"}]
    # Just over the limit: exact byte counts, since rounded sizes would read the same.
    assert mapped.notes == (
        "Attachment 1 (video) is 1,048,578 bytes, over the 1,048,576-byte limit; "
        "send a smaller file.",
    )
    bigger = [
        parts[0],
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + payload * 2}},
    ]
    mapped = build(user_turn(bigger), model=VIDEO, settings=settings)
    assert mapped.notes == (
        "Attachment 1 (video) is 2 MB, over the 1 MB limit; send a smaller file.",
    )
    small = build(user_turn(parts), model=VIDEO)  # the default limit is 100 MB
    assert sent(small)["input"][0]["content"][1]["type"] == "input_video"


def test_a_video_part_without_a_url_is_a_clear_error() -> None:
    with pytest.raises(RequestMappingError, match="video part without a URL"):
        build(user_turn([{"type": "video_url", "video_url": {}}]), model=VIDEO)


@pytest.mark.parametrize(
    ("part", "problem"),
    [
        ({"type": "image_url", "image_url": {}}, "image part without a URL"),
        ({"type": "image_url"}, "image part without a URL"),
        ({"type": "file", "file": {"filename": "a.pdf"}}, "file part without"),
        ({"type": "input_audio", "input_audio": {"data": "UklGRg=="}}, "audio part without"),
        ({"type": "text"}, "text part without text"),
        (7, "not a content part"),
    ],
)
def test_malformed_parts_are_refused(part: Any, problem: str) -> None:
    with pytest.raises(RequestMappingError, match=problem) as caught:
        build(user_turn([part]), model=AUDIO)
    assert "messages[0].content[0]" in str(caught.value)


# --------------------------------------------------------------------------
# Assistant history
# --------------------------------------------------------------------------


def assistant_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return message_items(sent(build(body)), "assistant")


def conversation(assistant_content: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": assistant_content},
            {"role": "user", "content": "And now?"},
        ]
    }


def test_assistant_history_has_id_status_and_output_text() -> None:
    [item] = assistant_items(conversation("Hello! How can I help?"))
    assert item["type"] == "message"
    assert item["status"] == "completed"
    assert item["id"].startswith("msg_")
    assert item["content"] == [
        {"type": "output_text", "text": "Hello! How can I help?", "annotations": []}
    ]


def test_assistant_ids_are_deterministic_and_distinct() -> None:
    first = assistant_items(conversation("Hello!"))[0]["id"]
    again = assistant_items(conversation("Hello!"))[0]["id"]
    other_text = assistant_items(conversation("Hi!"))[0]["id"]
    body = conversation("Hello!")
    body["messages"] = [{"role": "system", "content": "s"}, *body["messages"]]
    other_position = assistant_items(body)[0]["id"]
    assert first == again
    assert len({first, other_text, other_position}) == 3


def test_two_identical_assistant_replies_get_different_ids() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Say ok"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "Again"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "Thanks"},
        ]
    }
    ids = [item["id"] for item in assistant_items(body)]
    assert len(set(ids)) == 2


def test_rendered_reasoning_and_tool_blocks_are_stripped_from_assistant_text() -> None:
    content = f"{REASONING_BLOCK}\n{TOOL_BLOCK}It is 4 °C in Oslo."
    [item] = assistant_items(conversation(content))
    assert item["content"][0]["text"] == "It is 4 °C in Oslo."


def test_assistant_text_parts_are_flattened() -> None:
    content = [
        {"type": "text", "text": REASONING_BLOCK + "\nPart one."},
        {"type": "output_text", "text": "Part two."},
    ]
    [item] = assistant_items(conversation(content))
    assert item["content"][0]["text"] == "Part one.\nPart two."


@pytest.mark.parametrize("content", ["", "  \n", None, REASONING_BLOCK, TOOL_BLOCK + "\n\n"])
def test_an_assistant_message_with_no_answer_text_is_omitted(content: Any) -> None:
    assert assistant_items(conversation(content)) == []


def test_tool_messages_and_tool_calls_are_dropped_and_listed() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4 °C"},
            {"role": "assistant", "content": "It is 4 °C."},
            {"role": "user", "content": "Thanks"},
        ],
    }
    mapped = build(body)
    upstream = sent(mapped)
    assert [item["role"] for item in upstream["input"]] == ["user", "assistant", "user"]
    assert "call_1" not in json.dumps(upstream)
    assert set(mapped.dropped) == {"messages[1].tool_calls", "messages[2] (role tool)"}


# --------------------------------------------------------------------------
# strip_rendered_blocks
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain answer", "plain answer"),
        (f"{REASONING_BLOCK}answer", "answer"),
        (f"{REASONING_BLOCK}\n\nanswer", "\n\nanswer"),
        ("before <details type='reasoning'>x</details> after", "before  after"),
        ('<DETAILS TYPE="Reasoning">x</DETAILS>answer', "answer"),
        ('<details type="code_interpreter" done="true">run</details>answer', "answer"),
        # A nested block inside reasoning is removed with it, not cut halfway.
        (
            '<details type="reasoning"><details><summary>n</summary>in</details>'
            "tail</details>answer",
            "answer",
        ),
        # Code fences inside reasoning do not confuse the matcher.
        ('<details type="reasoning">```\n</div>\n```</details>answer', "answer"),
        # An unclosed block runs to the end, as a browser renders it.
        ('answer <details type="reasoning" done="false">still thinking', "answer "),
        # The model's own <details> are part of its answer and stay.
        (
            "<details><summary>Spoiler</summary>42</details>",
            "<details><summary>Spoiler</summary>42</details>",
        ),
        ('<details type="note">kept</details>', '<details type="note">kept</details>'),
        ("a </details> b", "a </details> b"),
    ],
)
def test_strip_rendered_blocks(text: str, expected: str) -> None:
    assert strip_rendered_blocks(text) == expected


@given(st.text())
def test_text_without_details_is_left_alone(text: str) -> None:
    if "<details" not in text.lower():
        assert strip_rendered_blocks(text) == text


@given(st.text(), st.text())
def test_a_rendered_block_between_texts_leaves_exactly_those_texts(before: str, after: str) -> None:
    if "details" not in (before + after).lower():
        assert strip_rendered_blocks(before + REASONING_BLOCK + after) == before + after


# --------------------------------------------------------------------------
# max_output_tokens
# --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_the_users_max_tokens_is_always_honoured(key: str) -> None:
    for use_catalogue in (False, True):
        chosen = RequestSettings(use_model_max_output_tokens=use_catalogue)
        upstream = sent(build(owui_body(**{key: 512}), settings=chosen))
        assert upstream["max_output_tokens"] == 512
        assert key not in upstream


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    upstream = sent(build(owui_body(max_tokens=100, max_completion_tokens=200)))
    assert upstream["max_output_tokens"] == 200


def test_an_integral_float_max_tokens_is_accepted() -> None:
    assert sent(build(owui_body(max_tokens=256.0)))["max_output_tokens"] == 256


def test_the_catalogue_limit_fills_in_only_when_enabled() -> None:
    assert "max_output_tokens" not in sent(build(owui_body()))
    on = RequestSettings(use_model_max_output_tokens=True)
    assert sent(build(owui_body(), settings=on))["max_output_tokens"] == 16_384
    unknown = ModelInfo(openrouter_id="x/y", sub_id="x.y", name="Y")
    assert "max_output_tokens" not in sent(build(owui_body(), model=unknown, settings=on))


@pytest.mark.parametrize("value", [0, -5, 1.5, "512", True, [512]])
def test_a_malformed_max_tokens_is_refused(value: Any) -> None:
    with pytest.raises(RequestMappingError, match="max_tokens") as caught:
        build(owui_body(max_tokens=value))
    assert "advanced parameters" in caught.value.message


# --------------------------------------------------------------------------
# Sampling parameters
# --------------------------------------------------------------------------


def test_temperature_top_p_and_parallel_tool_calls_pass_through() -> None:
    upstream = sent(build(owui_body(temperature=0, top_p=0.9, parallel_tool_calls=False)))
    assert upstream["temperature"] == 0
    assert upstream["top_p"] == 0.9
    assert upstream["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("temperature", "hot"),
        ("temperature", float("nan")),
        ("top_p", True),
        ("top_p", float("inf")),
        ("parallel_tool_calls", "yes"),
    ],
)
def test_non_numbers_are_dropped_and_listed(key: str, value: Any) -> None:
    mapped = build(owui_body(**{key: value}))
    assert key not in mapped.request.body()
    assert key in mapped.dropped


# --------------------------------------------------------------------------
# Reasoning
# --------------------------------------------------------------------------


def test_a_reasoning_model_gets_the_valve_effort_and_summary() -> None:
    upstream = sent(build(owui_body(), model=REASONER))
    assert upstream["reasoning"] == {"effort": "medium", "summary": "auto"}


def test_the_bodys_reasoning_effort_wins_over_the_valve() -> None:
    chosen = RequestSettings(reasoning_effort="low", reasoning_summary="detailed")
    mapped = build(owui_body(reasoning_effort="High"), model=REASONER, settings=chosen)
    assert sent(mapped)["reasoning"] == {"effort": "high", "summary": "detailed"}
    assert "reasoning_effort" not in mapped.dropped
    assert "reasoning_effort" not in sent(mapped)


def test_an_empty_reasoning_effort_falls_back_to_the_valve() -> None:
    chosen = RequestSettings(reasoning_effort="xhigh")
    upstream = sent(build(owui_body(reasoning_effort=""), model=REASONER, settings=chosen))
    assert upstream["reasoning"]["effort"] == "xhigh"


def test_a_disabled_summary_is_omitted() -> None:
    chosen = RequestSettings(reasoning_summary="disabled")
    assert sent(build(owui_body(), model=REASONER, settings=chosen))["reasoning"] == {
        "effort": "medium"
    }


def test_a_body_reasoning_object_is_merged_and_wins() -> None:
    body = owui_body(
        reasoning_effort="low",
        reasoning={"effort": "high", "max_tokens": 2000, "exclude": None},
    )
    mapped = build(body, model=REASONER)
    assert sent(mapped)["reasoning"] == {"effort": "high", "summary": "auto", "max_tokens": 2000}
    assert not {"reasoning", "reasoning_effort"} & set(mapped.dropped)


@pytest.mark.parametrize("model", [VISION, PLAIN])
def test_a_model_without_reasoning_gets_no_reasoning_key(model: ModelInfo) -> None:
    mapped = build(owui_body(reasoning_effort="high", reasoning={"effort": "high"}), model=model)
    assert "reasoning" not in sent(mapped)
    assert {"reasoning", "reasoning_effort"} <= set(mapped.dropped)


def test_reasoning_can_be_turned_off_by_the_valve() -> None:
    chosen = RequestSettings(enable_reasoning=False)
    mapped = build(owui_body(reasoning_effort="high"), model=REASONER, settings=chosen)
    assert "reasoning" not in sent(mapped)
    assert "reasoning_effort" in mapped.dropped


@pytest.mark.parametrize("value", ["extreme", 3, ["high"]])
def test_an_unknown_reasoning_effort_is_refused(value: Any) -> None:
    with pytest.raises(RequestMappingError, match="reasoning_effort"):
        build(owui_body(reasoning_effort=value), model=REASONER)


def test_a_non_object_reasoning_is_refused() -> None:
    with pytest.raises(RequestMappingError, match="reasoning is a str"):
        build(owui_body(reasoning="high"), model=REASONER)


# --------------------------------------------------------------------------
# response_format → text.format
# --------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def test_a_json_schema_becomes_text_format() -> None:
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "description": "A city",
            "schema": SCHEMA,
            "strict": True,
        },
    }
    upstream = sent(build(owui_body(response_format=response_format)))
    assert upstream["text"] == {
        "format": {
            "type": "json_schema",
            "name": "weather",
            "schema": SCHEMA,
            "strict": True,
            "description": "A city",
        }
    }
    assert "response_format" not in upstream


def test_a_json_schema_without_strict_sends_no_strict() -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    upstream = sent(build(owui_body(response_format=response_format)))
    assert upstream["text"]["format"] == {"type": "json_schema", "name": "w", "schema": SCHEMA}


def test_json_object_and_text_formats() -> None:
    json_mode = sent(build(owui_body(response_format={"type": "json_object"})))
    assert json_mode["text"] == {"format": {"type": "json_object"}}
    plain = build(owui_body(response_format={"type": "text"}))
    assert "text" not in sent(plain)
    assert "response_format" not in plain.dropped


@pytest.mark.parametrize(
    "response_format",
    [
        "json",
        {"type": "yaml"},
        {},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": "weather"},
        {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
        {"type": "json_schema", "json_schema": {"name": "", "schema": SCHEMA}},
        {"type": "json_schema", "json_schema": {"name": "w"}},
        {"type": "json_schema", "json_schema": {"name": "w", "schema": "{}"}},
        {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA, "strict": "yes"}},
    ],
)
def test_a_malformed_response_format_is_refused(response_format: Any) -> None:
    with pytest.raises(RequestMappingError, match="response_format") as caught:
        build(owui_body(response_format=response_format))
    assert "json_schema" in caught.value.message  # the fix names the accepted shape


# --------------------------------------------------------------------------
# Web search plugin
# --------------------------------------------------------------------------


def plugins(mapped: MappedRequest) -> Any:
    return sent(mapped).get("plugins")


def test_the_web_toggle_attaches_the_plugin() -> None:
    mapped = build(owui_body(), features={"web_search": True, "image_generation": False})
    assert plugins(mapped) == [{"id": "web", "max_results": 3}]


def test_max_results_none_is_omitted() -> None:
    chosen = RequestSettings(web_search_max_results=None)
    assert plugins(build(owui_body(), settings=chosen, features={"web_search": True})) == [
        {"id": "web"}
    ]


@pytest.mark.parametrize("features", [None, {}, {"web_search": False}])
def test_no_toggle_no_plugin_even_for_a_web_priced_model(features: Any) -> None:
    assert WEB_PRICED.web_search
    assert plugins(build(owui_body(), model=WEB_PRICED, features=features)) is None


def test_a_toggle_is_ignored_when_the_valve_is_off_with_a_note() -> None:
    chosen = RequestSettings(enable_web_search=False)
    mapped = build(owui_body(), settings=chosen, features={"web_search": True})
    assert plugins(mapped) is None
    assert mapped.notes == (
        "Web search is turned off in this pipe's settings; answering without it.",
    )


@pytest.mark.parametrize("forced", ["openai/gpt-4o", "openai.gpt-4o"])
def test_an_admin_can_force_the_plugin_by_either_id(forced: str) -> None:
    chosen = RequestSettings(enable_web_search=False, web_search_force_models=frozenset({forced}))
    mapped = build(owui_body(), settings=chosen, features={"web_search": False})
    assert plugins(mapped) == [{"id": "web", "max_results": 3}]
    assert mapped.notes == ()
    other = build(owui_body(), model=PLAIN, settings=chosen, features={})
    assert plugins(other) is None


def test_the_bodys_features_are_used_when_none_are_passed() -> None:
    body = owui_body(features={"web_search": True})
    assert plugins(build(body)) == [{"id": "web", "max_results": 3}]
    # Explicit features (from __metadata__) win over the body's.
    assert plugins(build(body, features={"web_search": False})) is None


# --------------------------------------------------------------------------
# Bodies that cannot be mapped
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "no messages"),
        ({"messages": None}, "no messages"),
        ({"messages": []}, "message list is empty"),
        ({"messages": "Hi"}, "messages is a str, not a list"),
        ({"messages": {"role": "user"}}, "messages is a dict"),
        ({"messages": ["Hi"]}, r"messages\[0\] is a str"),
        ({"messages": [{"content": "Hi"}]}, r"messages\[0\] has role None"),
        ({"messages": [{"role": "robot", "content": "Hi"}]}, "has role 'robot'"),
        ({"messages": [{"role": 1, "content": "Hi"}]}, "has role 1"),
        ({"messages": [{"role": "user", "content": 42}]}, "content of type int"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": 4.2}]},
            r"messages\[1\] has content of type float",
        ),
        ({"messages": [{"role": "user", "content": ""}]}, "no message has anything"),
        ({"messages": [{"role": "tool", "content": "4 °C"}]}, "no message has anything"),
    ],
)
def test_unmappable_bodies_are_refused_with_a_readable_error(body: Any, problem: str) -> None:
    with pytest.raises(RequestMappingError, match=problem) as caught:
        build(body)
    error = caught.value
    assert isinstance(error, EngineError)
    assert not isinstance(error, UsageError)
    assert error.retryable is False
    assert error.message.startswith("This chat request cannot be sent: ")
    assert error.message.endswith(".")


def test_a_body_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(RequestMappingError, match="not an object"):
        build(["messages"])


def test_an_unknown_role_error_lists_the_accepted_roles() -> None:
    with pytest.raises(RequestMappingError) as caught:
        build({"messages": [{"role": "robot", "content": "Hi"}]})
    assert "system, developer, user, assistant" in caught.value.message


# --------------------------------------------------------------------------
# Properties over many bodies
# --------------------------------------------------------------------------

MODELS = [VISION, REASONER, PLAIN, WEB_PRICED, AUDIO]

bodies = st.fixed_dictionaries(
    {"messages": st.just(owui_body()["messages"])},
    optional={
        "max_tokens": st.none() | st.integers(1, 100_000),
        "max_completion_tokens": st.none() | st.integers(1, 100_000),
        "temperature": st.none() | st.floats(0, 2) | st.text(max_size=3),
        "top_p": st.none() | st.floats(0, 1),
        "parallel_tool_calls": st.none() | st.booleans(),
        "reasoning_effort": st.none() | st.sampled_from(["", "low", "medium", "high", "none"]),
        "reasoning": st.none() | st.just({"effort": None, "max_tokens": 1000}),
        "response_format": st.none()
        | st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}},
            ]
        ),
        "stream": st.booleans(),
        "seed": st.none() | st.integers(),
        "user": st.none() | st.just({"id": "u"}),
    },
)
all_settings = st.builds(
    RequestSettings,
    enable_reasoning=st.booleans(),
    reasoning_effort=st.sampled_from(["low", "medium", "high"]),
    reasoning_summary=st.sampled_from(["auto", "concise", "detailed", "disabled"]),
    use_model_max_output_tokens=st.booleans(),
    enable_web_search=st.booleans(),
    web_search_force_models=st.sets(st.sampled_from(["openai/gpt-4o", "perplexity.sonar"])).map(
        frozenset
    ),
    web_search_max_results=st.none() | st.integers(1, 10),
)


def walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, Mapping):
        for inner in value.values():
            yield from walk(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from walk(inner)


@settings(max_examples=300)
@given(
    body=bodies,
    model=st.sampled_from(MODELS),
    chosen=all_settings,
    features=st.none() | st.fixed_dictionaries({"web_search": st.booleans()}),
)
def test_no_null_ever_goes_upstream_and_the_body_is_json(
    body: dict[str, Any],
    model: ModelInfo,
    chosen: RequestSettings,
    features: dict[str, Any] | None,
) -> None:
    mapped = build(body, model=model, settings=chosen, features=features)
    for value in mapped.request.options.values():
        assert value is not None
    upstream = mapped.request.body()
    assert None not in list(walk(upstream))
    assert json.loads(json.dumps(upstream)) == upstream
    assert upstream["stream"] is True
    assert upstream["model"] == model.openrouter_id
    assert set(upstream) <= {
        "model",
        "input",
        "stream",
        "max_output_tokens",
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "reasoning",
        "text",
        "plugins",
    }
    assert ("reasoning" in upstream) == (model.reasoning and chosen.enable_reasoning)
    assert list(mapped.dropped) == sorted(mapped.dropped)


# --------------------------------------------------------------------------
# Inline attachments: size and shape checked per attachment, the rest goes on
# --------------------------------------------------------------------------

SMALL = RequestSettings(base64_max_bytes=1024)
PNG_1K = "data:image/png;base64," + "A" * 1368  # 1026 bytes once decoded


def test_an_oversized_inline_image_is_left_out_and_the_rest_is_sent() -> None:
    parts = [
        {"type": "text", "text": "two pictures"},
        {"type": "image_url", "image_url": {"url": PNG_1K}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    mapped = build(user_turn(parts), settings=SMALL)
    content = sent(mapped)["input"][0]["content"]
    assert [p["type"] for p in content] == ["input_text", "input_image"]
    assert content[1]["image_url"] == "data:image/png;base64,iVBORw0KGgo="
    assert mapped.notes == (
        "Attachment 1 (image) is 2 KB, over the 1 KB limit; send a smaller file.",
    )


def test_broken_inline_attachments_say_which_and_why() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,%%", "filename": "a.pdf"},
        },
        {"type": "text", "text": "still here"},
    ]
    mapped = build(user_turn(parts))
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "still here"}]
    assert mapped.notes == (
        "Attachment 1 (image) is not valid base64; attach it again.",
        "Attachment 2 (image) is a data: URL that is not base64-encoded; attach the file itself.",
        "Attachment 3 (file a.pdf) is not valid base64; attach it again.",
    )


@pytest.mark.parametrize(
    ("audio", "expected"),
    [
        ({"data": "SUQzBA==", "format": "mp3"}, {"data": "SUQzBA==", "format": "mp3"}),
        ({"data": "SUQzBA==", "format": "audio/mpeg"}, {"data": "SUQzBA==", "format": "mp3"}),
        ({"data": "UklGRg==", "format": "WAVE"}, {"data": "UklGRg==", "format": "wav"}),
        ({"data": "data:audio/x-wav;base64,UklGRg=="}, {"data": "UklGRg==", "format": "wav"}),
        ("data:audio/mp3;base64,SUQzBA==", {"data": "SUQzBA==", "format": "mp3"}),
    ],
)
def test_audio_is_sent_inline_as_mp3_or_wav(audio: Any, expected: dict[str, str]) -> None:
    part = {"type": "input_audio", "input_audio": audio}
    content = sent(build(user_turn([part]), model=AUDIO))["input"][0]["content"]
    assert content == [{"type": "input_audio", "input_audio": expected}]


@pytest.mark.parametrize(
    ("audio", "note"),
    [
        (
            {"data": "https://x.test/a.mp3", "format": "mp3"},
            "Audio links are not supported; attach the recording.",
        ),
        (
            {"data": "T2dnUw==", "format": "ogg"},
            "Audio in 'ogg' is not supported; send mp3 or wav.",
        ),
        ({"data": "SUQz$$$$", "format": "mp3"}, "Attachment 1 (audio) is not valid base64"),
    ],
)
def test_audio_that_cannot_be_sent_is_left_out_with_a_reason(audio: Any, note: str) -> None:
    parts = [{"type": "text", "text": "listen"}, {"type": "input_audio", "input_audio": audio}]
    mapped = build(user_turn(parts), model=AUDIO)
    assert sent(mapped)["input"][0]["content"] == [{"type": "input_text", "text": "listen"}]
    assert mapped.notes[0].startswith(note)


# --------------------------------------------------------------------------
# Pass-through mode: Open WebUI's tool calls and results are history
# --------------------------------------------------------------------------

WEATHER_SPEC = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    },
}


def owui_call(call_id: Any, arguments: str, name: str = "get_weather") -> dict[str, Any]:
    """One entry of an assistant's ``tool_calls`` as 0.12.4's ``convert_output_to_messages``
    writes it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_message(call_id: Any, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def follow_up_body() -> dict[str, Any]:
    """The body 0.12.4 hands the pipe after running the two calls of its first answer.

    Its tool loop appends the rebuilt output (``convert_output_to_messages`` with
    ``flatten_tool_images``: the answer's text and calls in one assistant message,
    then one tool message per call, results as strings from
    ``tool_result_content``), strips ``usage`` in ``process_messages_with_output``
    and re-sends the rest of the body, native ``tools`` included.
    """
    return {
        "stream": True,
        "model": "orpipe.openai.gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Weather in Oslo and Bergen?"},
            {
                "role": "assistant",
                "content": "Let me check both cities.",
                "tool_calls": [
                    owui_call("call_1", '{"city": "Oslo"}'),
                    owui_call("call_2", '{"city": "Bergen"}'),
                ],
            },
            tool_message("call_1", '{"temperature": 4}'),
            tool_message("call_2", '{"temperature": 7}'),
        ],
        "tools": [{"type": "function", "function": WEATHER_SPEC}],
        "stream_options": {"include_usage": True},
    }


def passthrough(body: Mapping[str, Any], **kwargs: Any) -> MappedRequest:
    return build(body, owui_tool_calls=True, **kwargs)


def calls_and_outputs(mapped: MappedRequest) -> list[dict[str, Any]]:
    return [i for i in sent(mapped)["input"] if i.get("type", "").startswith("function_call")]


def fc(call_id: str, arguments: str, name: str = "get_weather", **extra: Any) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
        **extra,
    }


def fco(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def test_open_webuis_follow_up_maps_to_calls_and_outputs_in_order() -> None:
    mapped = passthrough(follow_up_body(), supports_tools=True)
    items = sent(mapped)["input"]
    assistant = items[2]
    assert assistant["id"].startswith("msg_")
    assert items == [
        {
            "type": "message",
            "role": "system",
            "content": [{"type": "input_text", "text": "You are a concise assistant."}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Weather in Oslo and Bergen?"}],
        },
        {
            "type": "message",
            "role": "assistant",
            "id": assistant["id"],
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "Let me check both cities.", "annotations": []}
            ],
        },
        fc("call_1", '{"city": "Oslo"}'),
        fc("call_2", '{"city": "Bergen"}'),
        fco("call_1", '{"temperature": 4}'),
        fco("call_2", '{"temperature": 7}'),
    ]
    assert mapped.warnings == ()
    assert "tools" not in mapped.dropped and not any("tool" in d for d in mapped.dropped)


def test_the_follow_up_is_stable_so_the_prompt_cache_keeps_working() -> None:
    assert (
        sent(passthrough(follow_up_body()))["input"] == sent(passthrough(follow_up_body()))["input"]
    )


def test_several_rounds_and_a_later_turn_keep_every_pair() -> None:
    body = follow_up_body()
    body["messages"] += [
        # Round two: no text, one more call (0.12.4 keeps the earlier rounds' messages).
        {"role": "assistant", "content": "", "tool_calls": [owui_call("call_3", "{}", "get_time")]},
        tool_message("call_3", "12:00"),
        {"role": "assistant", "content": "Oslo 4 °C, Bergen 7 °C at noon."},
        {"role": "user", "content": "And tomorrow?"},
    ]
    mapped = passthrough(body)
    kinds = [(i.get("type"), i.get("role") or i.get("call_id")) for i in sent(mapped)["input"]]
    assert kinds == [
        ("message", "system"),
        ("message", "user"),
        ("message", "assistant"),
        ("function_call", "call_1"),
        ("function_call", "call_2"),
        ("function_call_output", "call_1"),
        ("function_call_output", "call_2"),
        ("function_call", "call_3"),
        ("function_call_output", "call_3"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert mapped.warnings == ()


def test_body_tools_are_not_read_unless_the_caller_says_whether_they_are_supported() -> None:
    # A caller announcing __tools__ itself keeps doing so: no second copy, no note.
    mapped = passthrough(follow_up_body())
    assert "tools" not in sent(mapped)
    assert "tools" in mapped.dropped
    assert mapped.notes == ()
    assert len(calls_and_outputs(mapped)) == 4


def test_engine_mode_still_drops_tool_history_and_body_tools() -> None:
    mapped = build(follow_up_body(), supports_tools=True, strict_tools=True)
    upstream = sent(mapped)
    assert calls_and_outputs(mapped) == []
    assert "tools" not in upstream
    assert {"tools", "messages[2].tool_calls", "messages[3] (role tool)"} <= set(mapped.dropped)
    assert mapped.tool_names == {}


def test_a_call_without_its_result_is_left_out_with_a_warning() -> None:
    body = follow_up_body()
    del body["messages"][4]  # call_2's result never came (the stop button, say)
    mapped = passthrough(body)
    assert calls_and_outputs(mapped) == [
        fc("call_1", '{"city": "Oslo"}'),
        fco("call_1", '{"temperature": 4}'),
    ]
    assert mapped.warnings == ("function_call call_2 has no output; left out",)


def test_a_result_without_its_call_is_left_out_with_a_warning() -> None:
    body = follow_up_body()
    body["messages"].append(tool_message("call_9", "stray"))
    mapped = passthrough(body)
    assert "call_9" not in json.dumps(sent(mapped))
    assert mapped.warnings == ("function_call_output call_9 has no function_call; left out",)


@pytest.mark.parametrize(
    ("entry", "warning"),
    [
        ("call_1", "messages[2].tool_calls[0] is a str, not an object; left out"),
        (
            {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            "messages[2].tool_calls[0] has no id; left out",
        ),
        (
            {"id": "", "type": "function", "function": {"name": "get_weather"}},
            "messages[2].tool_calls[0] has no id; left out",
        ),
        (
            {"id": "call_1", "type": "function", "function": {"arguments": "{}"}},
            "messages[2].tool_calls[0] has no function name; left out",
        ),
        (
            {"id": "call_1", "type": "function", "function": "get_weather"},
            "messages[2].tool_calls[0] is not a function call ('function'); left out",
        ),
        (
            {"id": "call_1", "type": "custom", "custom": {"name": "grep", "input": "x"}},
            "messages[2].tool_calls[0] is not a function call ('custom'); left out",
        ),
    ],
)
def test_malformed_tool_calls_are_left_out_with_their_results(entry: Any, warning: str) -> None:
    body = follow_up_body()
    body["messages"][2]["tool_calls"][0] = entry
    mapped = passthrough(body)
    # The other call and its result still go; call_1's result has nothing to pair with.
    assert calls_and_outputs(mapped) == [
        fc("call_2", '{"city": "Bergen"}'),
        fco("call_2", '{"temperature": 7}'),
    ]
    assert mapped.warnings[0] == warning
    assert mapped.warnings[1:] == ("function_call_output call_1 has no function_call; left out",)


def test_tool_calls_that_are_not_a_list_are_left_out_with_a_warning() -> None:
    body = follow_up_body()
    body["messages"][2]["tool_calls"] = owui_call("call_1", "{}")
    mapped = passthrough(body)
    assert mapped.warnings[0] == "messages[2].tool_calls is a dict, not a list; left out"
    assert calls_and_outputs(mapped) == []  # both results lost their calls


@pytest.mark.parametrize(
    ("arguments", "sent_as"),
    [
        ('{"city": "Oslo"', '{"city": "Oslo"'),  # not JSON: what the model wrote, verbatim
        ("", "{}"),
        ("  ", "{}"),
        (None, "{}"),
        ({"city": "Zürich"}, '{"city": "Zürich"}'),  # an object from another client
    ],
)
def test_arguments_are_sent_as_a_json_string(arguments: Any, sent_as: str) -> None:
    body = follow_up_body()
    body["messages"][2]["tool_calls"][0]["function"]["arguments"] = arguments
    assert calls_and_outputs(passthrough(body))[0]["arguments"] == sent_as


def test_numeric_ids_are_text_and_tool_messages_without_an_id_are_warned_about() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Roll a die"},
            {"role": "assistant", "content": None, "tool_calls": [owui_call(7, "{}", "roll")]},
            tool_message(7, "4"),
            {"role": "tool", "content": "no id"},
            {"role": "function", "name": "roll", "content": "legacy"},
        ]
    }
    mapped = passthrough(body)
    assert calls_and_outputs(mapped) == [fc("7", "{}", name="roll"), fco("7", "4")]
    assert mapped.warnings == (
        "messages[3] (role tool) has no tool_call_id; left out",
        "messages[4] (role function) has no tool_call_id; left out",
    )


@pytest.mark.parametrize(
    ("content", "output"),
    [
        ("", ""),
        (None, ""),
        ([{"type": "text", "text": "4 "}, {"type": "input_text", "text": "°C"}], "4 °C"),
        (["4 ", "°C"], "4 °C"),
        ({"type": "text", "text": "4 °C"}, "4 °C"),
        ({"temperature": 4}, '{"temperature": 4}'),
        (4, "4"),
        (True, "true"),
    ],
)
def test_tool_results_are_flattened_to_text(content: Any, output: str) -> None:
    body = follow_up_body()
    body["messages"][3]["content"] = content
    assert calls_and_outputs(passthrough(body))[2] == fco("call_1", output)


def test_non_text_parts_of_a_result_are_listed_as_dropped() -> None:
    body = follow_up_body()
    body["messages"][3]["content"] = [
        {"type": "input_text", "text": "a chart:"},
        {"type": "input_image", "image_url": PNG},
    ]
    mapped = passthrough(body)
    assert calls_and_outputs(mapped)[2] == fco("call_1", "a chart:")
    assert "messages[3] (role tool) non-text output part" in mapped.dropped


def test_a_call_id_reused_in_a_later_round_gets_a_unique_item_id() -> None:
    # Some providers restart their call ids every round; input item ids must stay unique.
    body = follow_up_body()
    body["messages"] += [
        {"role": "assistant", "content": "", "tool_calls": [owui_call("call_1", "{}", "get_time")]},
        tool_message("call_1", "12:00"),
    ]
    items = calls_and_outputs(passthrough(body))
    assert [i["id"] for i in items if i["type"] == "function_call"] == [
        "fc_call_1",
        "fc_call_2",
        "fc_call_1_2",
    ]
    # Each result still follows its own call.
    assert [(i["type"], i.get("name") or i["output"]) for i in items[-2:]] == [
        ("function_call", "get_time"),
        ("function_call_output", "12:00"),
    ]


def test_an_open_webui_generated_fc_id_is_kept_as_the_item_id() -> None:
    body = follow_up_body()
    body["messages"][2]["tool_calls"][0]["id"] = "fc_0123456789abcdef01234567"
    body["messages"][3]["tool_call_id"] = "fc_0123456789abcdef01234567"
    first = calls_and_outputs(passthrough(body))[0]
    assert first["id"] == first["call_id"] == "fc_0123456789abcdef01234567"


# -- the body's tools ---------------------------------------------------------


def test_body_tools_become_responses_function_tools_when_supported() -> None:
    mapped = passthrough(follow_up_body(), supports_tools=True)
    assert sent(mapped)["tools"] == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": WEATHER_SPEC["parameters"],
        }
    ]
    assert mapped.notes == () and mapped.tool_names == {}


def test_body_tools_are_left_out_with_a_note_when_the_model_takes_none() -> None:
    mapped = passthrough(follow_up_body(), supports_tools=False)
    assert "tools" not in sent(mapped)
    assert mapped.notes == (
        "OpenAI: GPT-4o does not support tool calling on OpenRouter, so the 1 enabled "
        "tool(s) were left out of this answer.",
    )
    # The history of calls already made is still history.
    assert len(calls_and_outputs(mapped)) == 4


def test_strict_body_tools_get_a_strict_schema() -> None:
    [tool] = sent(passthrough(follow_up_body(), supports_tools=True, strict_tools=True))["tools"]
    assert tool["strict"] is True
    assert tool["parameters"]["additionalProperties"] is False
    assert tool["parameters"]["required"] == ["city", "unit"]
    assert tool["parameters"]["properties"]["unit"]["type"] == ["string", "null"]


def test_a_renamed_body_tool_is_not_a_note_and_its_history_calls_use_the_new_name() -> None:
    body = follow_up_body()
    spec = {**WEATHER_SPEC, "name": "weather lookup/v2"}
    body["tools"] = [{"type": "function", "function": spec}]
    for call in body["messages"][2]["tool_calls"]:
        call["function"]["name"] = "weather lookup/v2"  # the renderer handed it back so
    mapped = passthrough(body, supports_tools=True)
    assert [t["name"] for t in sent(mapped)["tools"]] == ["weather_lookup_v2"]
    assert mapped.tool_names == {"weather_lookup_v2": "weather lookup/v2"}
    assert {i.get("name") for i in calls_and_outputs(mapped)} == {"weather_lookup_v2", None}
    # Renaming is nothing the user can act on: logged at debug level, no notification.
    assert not any("weather_lookup_v2" in note for note in mapped.notes)


def test_names_of_tools_the_caller_announces_are_mapped_too() -> None:
    body = follow_up_body()
    del body["tools"]  # legacy function calling: the caller declares __tools__ itself
    body["messages"][2]["tool_calls"][0]["function"]["name"] = "weather lookup/v2"
    body["messages"][2]["tool_calls"][1]["function"]["name"] = "odd name!"
    mapped = passthrough(body, tool_names={"weather_lookup_v2": "weather lookup/v2"})
    names = [i["name"] for i in calls_and_outputs(mapped) if i["type"] == "function_call"]
    # A known rename is undone; an unknown bad name is cleaned as declare_tools would.
    assert names == ["weather_lookup_v2", "odd_name_"]
    assert mapped.tool_names == {"weather_lookup_v2": "weather lookup/v2"}
    assert "tools" not in sent(mapped)


def test_malformed_body_tools_are_skipped_and_the_rest_announced() -> None:
    body = follow_up_body()
    body["tools"] = [
        {"type": "function", "function": WEATHER_SPEC},
        {"type": "function", "function": {**WEATHER_SPEC, "description": "again"}},
        {"type": "function", "function": {"description": "no name"}},
        {"type": "custom", "custom": {"name": "grep"}},
        "get_time",
    ]
    mapped = passthrough(body, supports_tools=True)
    assert [(t["name"], t["description"]) for t in sent(mapped)["tools"]] == [
        ("get_weather", "The weather in a city")
    ]
    assert mapped.warnings == (
        "tools[1] repeats the tool 'get_weather'; the first one is kept",
        "tools[2] has no function name; left out",
    )
    assert {"tools[3] (type 'custom')", "tools[4] (type None)"} <= set(mapped.dropped)


@pytest.mark.parametrize("tools", [{"type": "function"}, "get_weather"])
def test_body_tools_that_are_not_a_list_are_warned_about(tools: Any) -> None:
    mapped = passthrough({**follow_up_body(), "tools": tools}, supports_tools=True)
    assert "tools" not in sent(mapped)
    assert mapped.warnings[0].startswith("tools is a ")


def test_an_empty_tools_list_announces_nothing() -> None:
    mapped = passthrough({**follow_up_body(), "tools": []}, supports_tools=True)
    assert "tools" not in sent(mapped)
    assert mapped.notes == () and mapped.warnings == ()


def test_replayed_reasoning_goes_before_the_calls_it_led_to() -> None:
    from orpipe.adapters.openwebui.artifact_replay import ReplayPlan  # noqa: PLC0415
    from orpipe.engine.artifacts import Artifact, marker_line  # noqa: PLC0415

    stored = Artifact(
        artifact_id="01M8HEYFBJ3BGE43XBA2",
        chat_id="chat-1",
        message_id="m1",
        item_type="reasoning",
        payload={
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Two cities: two calls."}],
        },
    )
    body = follow_up_body()
    # The renderer ends the first answer with the reference of its stored reasoning.
    body["messages"][2]["content"] += f"\n\n{marker_line(stored.artifact_id)}\n"
    replay = ReplayPlan(artifacts={stored.artifact_id: stored}, chat_id="chat-1")
    mapped = passthrough(body, model=REASONER, replay=replay)
    kinds = [i.get("type") for i in sent(mapped)["input"][2:]]
    assert kinds == [
        "message",
        "reasoning",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
    ]
    assert mapped.warnings == ()


def test_a_suffixed_item_id_never_takes_another_calls_id() -> None:
    body = follow_up_body()
    body["messages"][2]["tool_calls"] = [owui_call("call_1", "{}"), owui_call("call_1_2", "{}")]
    body["messages"][3:] = [tool_message("call_1", "a"), tool_message("call_1_2", "b")]
    body["messages"] += [
        {"role": "assistant", "content": "", "tool_calls": [owui_call("call_1", "{}")]},
        tool_message("call_1", "c"),
    ]
    items = calls_and_outputs(passthrough(body))
    ids = [i["id"] for i in items if i["type"] == "function_call"]
    assert ids == ["fc_call_1", "fc_call_1_2", "fc_call_1_3"]
