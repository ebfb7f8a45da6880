"""Which images go upstream: newest user turn only, at most N, else the last answer's."""

from __future__ import annotations

from typing import Any

import pytest

from orpipe.adapters.openwebui.image_selection import select_images


def user(*parts: Any) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": list(parts)}


def answer(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def text(t: str) -> dict[str, Any]:
    return {"type": "input_text", "text": t}


def image(n: int) -> dict[str, Any]:
    return {"type": "input_image", "image_url": f"https://img.example/{n}.png", "detail": "auto"}


def images_of(items: list[dict[str, Any]]) -> list[str]:
    return [
        p["image_url"]
        for it in items
        if it.get("role") == "user"
        for p in it["content"]
        if p.get("type") == "input_image"
    ]


def test_only_the_newest_turn_keeps_its_images() -> None:
    items = [user(text("look"), image(1)), answer("a cat"), user(text("and this?"), image(2))]
    out, notes = select_images(items, limit=5, selection="user_turn_only")
    assert images_of(out) == ["https://img.example/2.png"]
    assert out[0]["content"] == [text("look")]  # the old turn keeps its words
    assert notes == ["1 image from earlier messages was not sent again."]


def test_several_user_messages_in_a_row_are_one_turn() -> None:
    items = [answer("hi"), user(image(1)), user(text("both"), image(2))]
    out, notes = select_images(items, limit=5, selection="user_turn_only")
    assert images_of(out) == ["https://img.example/1.png", "https://img.example/2.png"]
    assert notes == []


@pytest.mark.parametrize(("limit", "sent"), [(1, 1), (3, 3), (5, 5), (20, 7)])
def test_at_most_the_limit_first_attached_first(limit: int, sent: int) -> None:
    items = [user(text("many"), *(image(n) for n in range(7)))]
    out, notes = select_images(items, limit=limit, selection="user_turn_only")
    assert images_of(out) == [f"https://img.example/{n}.png" for n in range(sent)]
    assert bool(notes) is (sent < 7)
    if sent < 7:
        noun = "image" if limit == 1 else "images"
        assert notes[0] == (
            f"At most {limit} {noun} can be sent with one message; {7 - limit} more were left out."
        )


def test_a_message_of_only_old_images_disappears() -> None:
    items = [user(image(1)), answer("ok"), user(text("next"))]
    out, _ = select_images(items, limit=5, selection="user_turn_only")
    assert out == [answer("ok"), user(text("next"))]


def test_the_last_answers_images_are_attached_when_the_user_sent_none() -> None:
    shown = 'Here: ![a](https://cdn.example/a.png) and ![b](<https://cdn.example/b.png> "B")'
    items = [user(text("draw")), answer(shown), user(text("make it bluer"))]
    out, notes = select_images(items, limit=5, selection="user_then_assistant")
    assert images_of(out) == ["https://cdn.example/a.png", "https://cdn.example/b.png"]
    assert notes == ["2 images from the last answer were attached again."]
    only_user, _ = select_images(items, limit=5, selection="user_turn_only")
    assert images_of(only_user) == []


def test_borrowed_images_respect_the_limit_and_skip_relative_links() -> None:
    shown = (
        "![x](https://a.example/1.png) ![y](/api/v1/files/abc/content) "
        "![z](data:image/png;base64,AA==) ![w](https://a.example/2.png)"
    )
    items = [answer(shown), user(text("again"))]
    out, _ = select_images(items, limit=5, selection="user_then_assistant")
    assert images_of(out) == [
        "https://a.example/1.png",
        "data:image/png;base64,AA==",
        "https://a.example/2.png",
    ]
    capped, _ = select_images(items, limit=1, selection="user_then_assistant")
    assert images_of(capped) == ["https://a.example/1.png"]


def test_nothing_to_borrow_changes_nothing() -> None:
    items = [answer("no pictures here"), user(text("hm"))]
    assert select_images(items, limit=5, selection="user_then_assistant") == (items, [])
