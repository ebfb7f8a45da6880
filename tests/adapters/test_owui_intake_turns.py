"""Attachments and generated images through the whole pipe: Open WebUI's real file store,
the mock OpenRouter in its own process, a loopback server for links.

What is checked is what a person and OpenRouter each get: the body sent
upstream (inlined files, vetted video links), the notes shown, and the
answer's Markdown link to an image stored in Open WebUI's files.
"""

from __future__ import annotations

import base64
import re

from orpipe.adapters.openwebui.files import Owner, OwuiFiles, content_url
from orpipe.bench.mock_scenarios import plan
from tests.adapters.asyncio_support import Mock
from tests.adapters.owui_storage import OwuiModules, owui, owui_loop_scope  # noqa: F401
from tests.adapters.test_downloader import answer, downloader, server
from tests.adapters.test_owui_pipe import (  # noqa: F401 - fixtures used by name
    Owui,
    Recording,
    _turn,
    artifact_database,
    assert_statuses_closed,
    body,
    make_pipe,
    on_loop,
    read,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def store() -> OwuiFiles:
    return OwuiFiles(fallback_email="bot@example.org", fallback_name="Bot")


def test_an_open_webui_file_is_inlined_and_a_generated_image_is_stored(
    mock: Mock,
    owui: OwuiModules,  # noqa: F811
    loop_kind: str,
) -> None:
    recording = Recording(images=1, tokens=5)

    async def scenario() -> None:
        async with owui_loop_scope(owui):
            chat = Owui(user_id="user-intake")
            files = store()
            owner = Owner(id=chat.user_id)
            file_id = await files.save(PNG, media_type="image/png", filename="in.png", owner=owner)
            request = body("mock.images")
            request["messages"][-1]["content"] = [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": content_url(file_id)}},
                {"type": "video_url", "video_url": {"url": "https://youtu.be/dQw4w9WgXcQ"}},
            ]
            pipe = make_pipe(mock, "guest")
            answer_ = await read(await _turn(pipe, chat, request, recording, files=files))

            sent = recording.bodies[0]["input"][-1]["content"]
            inline = "data:image/png;base64," + base64.b64encode(PNG).decode()
            assert sent == [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": inline, "detail": "auto"},
                {"type": "input_video", "video_url": "https://youtu.be/dQw4w9WgXcQ"},
            ]
            # The generated image: a link to Open WebUI's file in the answer, never base64.
            links = re.findall(
                r"!\[Generated image\]\(/api/v1/files/([\w-]+)/content\)", answer_.text
            )
            assert len(links) == 1 and "base64" not in answer_.text
            row = await owui.files.Files.get_file_by_id(links[0])
            assert row.user_id == chat.user_id
            stored = await files.read(row.id, reader=owner, limit_bytes=1 << 20)
            assert stored.data == base64.b64decode(plan("images", {}).images[0])
            assert not answer_.errors

    on_loop(loop_kind, scenario, limit_s=30)


def test_a_bad_attachment_is_named_in_a_note_and_the_turn_goes_on(
    mock: Mock,
    owui: OwuiModules,  # noqa: F811
    loop_kind: str,
) -> None:
    recording = Recording(images=0, tokens=4)

    async def scenario() -> None:
        async with owui_loop_scope(owui):
            chat = Owui(user_id="user-intake-2")
            request = body("mock.images")
            async with server(answer("200 OK", b"<html/>", Content_Type="text/html")) as port:
                request["messages"][-1]["content"] = [
                    {"type": "text", "text": "Two things"},
                    {"type": "image_url", "image_url": {"url": f"http://127.0.0.1:{port}/x.png"}},
                    {"type": "image_url", "image_url": {"url": "/api/v1/files/missing-id/content"}},
                ]
                pipe = make_pipe(mock, "guest", ALLOW_INSECURE_HTTP_HOSTS="127.0.0.1")
                answer_ = await read(
                    await _turn(
                        pipe,
                        chat,
                        request,
                        recording,
                        files=store(),
                        downloader=downloader(),
                        allow_loopback=True,
                    )
                )
            assert answer_.text and not answer_.errors
            assert recording.bodies[0]["input"][-1]["content"] == [
                {"type": "input_text", "text": "Two things"}
            ]
            notes = [e["data"]["content"] for e in chat.events if e.get("type") == "notification"]
            assert "An image was left out: the link is a text/html file, not an image." in notes
            assert "An image was left out: the file missing-id was not found." in notes
            statuses = [e["data"]["description"] for e in chat.events if e.get("type") == "status"]
            # Closed by a line of its own, not a hidden repeat that Open WebUI lists as a blank dot.
            assert statuses[:3] == [
                "Preparing attachments…",
                "Attachments prepared",
                "Waiting for OpenRouter…",
            ]
            assert_statuses_closed(chat)

    on_loop(loop_kind, scenario, limit_s=30)
