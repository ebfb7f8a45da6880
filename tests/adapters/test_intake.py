"""The intake pass against Open WebUI 0.12.4's real file store and real loopback HTTP servers.

Links point at a loopback server (through the test-only loopback allowance
of the downloader and the SSRF guard); Open WebUI's files are its own code on
a throwaway database. Each test states what a person sends and checks what
would go to OpenRouter, what was stored, and what the person is told.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orpipe.adapters.openwebui.downloader import Downloader, DownloadLimits
from orpipe.adapters.openwebui.files import Owner, OwuiFiles, content_url
from orpipe.adapters.openwebui.generated_images import GeneratedImages
from orpipe.adapters.openwebui.intake import (
    Intake,
    IntakeLimits,
    effective_remote_limit,
    is_youtube,
)
from orpipe.engine.messages import OutputItem, TextDelta
from tests.adapters.asyncio_support import run_on
from tests.adapters.owui_storage import OwuiModules, new_user, owui, owui_loop_scope  # noqa: F401
from tests.adapters.test_downloader import answer, downloader, server

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
PDF = b"%PDF-1.7\n" + b"0" * 300


def data_url(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Hi"}, *parts],
    }


class Counting:
    """A loopback handler that counts how often it was asked."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.hits = 0
        self._handler = answer("200 OK", body, Content_Type=content_type)

    async def __call__(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        await self._handler(head, writer)


class Case:
    """One test's world: Open WebUI's store, a user, and the intake built on them."""

    def __init__(self, owui: OwuiModules, owner: Owner, store: OwuiFiles) -> None:  # noqa: F811
        self.owui, self.owner, self.store = owui, owner, store

    def intake(self, **limits: Any) -> Intake:
        settings: dict[str, Any] = {"allow_loopback": True, "allow_http_hosts": {"127.0.0.1"}}
        settings.update(limits)
        return Intake(
            limits=IntakeLimits(**settings),
            fetcher=downloader(max_bytes=settings.get("remote_max_bytes", 50 << 20)),
            store=self.store,
            owner=self.owner,
        )

    async def files_of_owner(self) -> list[Any]:
        return list(await self.owui.files.Files.get_files_by_user_id(self.owner.id))


def scenario_with(
    owui: OwuiModules,  # noqa: F811
    body: Callable[[Case], Awaitable[None]],
) -> None:
    async def run() -> None:
        async with owui_loop_scope(owui):
            row = await new_user(owui)
            owner = Owner(id=row.id, email=row.email, name=row.name, role=row.role)
            store = OwuiFiles(fallback_email="bot@example.org", fallback_name="Bot")
            await body(Case(owui, owner, store))

    run_on("asyncio", run, limit_s=30)


# -- Open WebUI's own files ----------------------------------------------------------


def test_open_webui_file_urls_are_read_from_storage_and_inlined(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        image_id = await case.store.save(
            PNG, media_type="image/png", filename="a.png", owner=case.owner
        )
        pdf_id = await case.store.save(
            PDF, media_type="application/pdf", filename="r.pdf", owner=case.owner
        )
        items = [
            user(
                {"type": "input_image", "image_url": content_url(image_id), "detail": "auto"},
                {
                    "type": "input_file",
                    "file_url": f"https://chat.example/api/v1/files/{pdf_id}/content",
                },
            )
        ]
        result = await case.intake(save_file_data_content=False).prepare(items)
        image, file = result.input[0]["content"][1:]
        assert image == {
            "type": "input_image",
            "image_url": data_url(PNG, "image/png"),
            "detail": "auto",
        }
        # Inlined with its stored name; OpenRouter could not have fetched the internal link.
        assert file == {
            "type": "input_file",
            "file_data": data_url(PDF, "application/pdf"),
            "filename": "r.pdf",
        }
        assert result.notes == ()

    scenario_with(owui, body)


def test_someone_elses_file_is_left_out_with_a_note_and_the_rest_goes(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        other = await new_user(case.owui, name="Eve")
        theirs = await case.store.save(
            PNG,
            media_type="image/png",
            filename="secret.png",
            owner=Owner(id=other.id, email=other.email, name=other.name),
        )
        items = [user({"type": "input_image", "image_url": content_url(theirs), "detail": "auto"})]
        result = await case.intake().prepare(items)
        assert result.input[0]["content"] == [{"type": "input_text", "text": "Hi"}]
        assert result.notes == (f"An image was left out: the file {theirs} was not found.",)

    scenario_with(owui, body)


def test_without_a_file_store_internal_links_are_left_out_with_a_reason(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        intake = Intake(limits=IntakeLimits(), fetcher=downloader(), store=None, owner=None)
        items = [
            user(
                {"type": "input_image", "image_url": "/api/v1/files/abc/content", "detail": "auto"}
            )
        ]
        result = await intake.prepare(items)
        assert result.input[0]["content"] == [{"type": "input_text", "text": "Hi"}]
        assert result.notes == (
            "An image was left out: Open WebUI's file store is not available to this pipe.",
        )

    scenario_with(owui, body)


# -- links ---------------------------------------------------------------------------


def test_an_image_link_is_downloaded_inlined_and_a_copy_kept(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        handler = Counting(PNG, "image/png")
        async with server(handler) as port:
            url = f"http://127.0.0.1:{port}/pics/cat%20photo.png"
            items = [user({"type": "input_image", "image_url": url, "detail": "high"})]
            result = await case.intake().prepare(items)
        assert handler.hits == 1
        assert result.input[0]["content"][1] == {
            "type": "input_image",
            "image_url": data_url(PNG, "image/png"),
            "detail": "high",
        }
        (copy,) = result.stored
        row = await case.owui.files.Files.get_file_by_id(copy)
        assert row.user_id == case.owner.id and row.filename == "cat_photo.png"
        assert (await case.store.read(copy, reader=case.owner, limit_bytes=1 << 20)).data == PNG

    scenario_with(owui, body)


def test_without_save_remote_file_urls_nothing_is_stored(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        before = len(await case.files_of_owner())
        async with server(Counting(PNG, "image/png")) as port:
            items = [user({"type": "input_image", "image_url": f"http://127.0.0.1:{port}/a.png"})]
            result = await case.intake(save_remote_file_urls=False).prepare(items)
        assert result.input[0]["content"][1]["image_url"] == data_url(PNG, "image/png")
        assert result.stored == () and len(await case.files_of_owner()) == before

    scenario_with(owui, body)


def test_older_turns_are_not_downloaded_again(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        handler = Counting(PNG, "image/png")
        async with server(handler) as port:
            url = f"http://127.0.0.1:{port}/a.png"
            older = user({"type": "input_image", "image_url": url})
            reply = {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "A cat."}],
            }
            result = await case.intake().prepare([older, reply, user()])
        assert handler.hits == 0
        assert result.input[0]["content"][1]["image_url"] == url

    scenario_with(owui, body)


def test_a_link_that_is_not_an_image_is_left_out(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        async with server(Counting(b"<html>login</html>", "text/html")) as port:
            items = [user({"type": "input_image", "image_url": f"http://127.0.0.1:{port}/a.png"})]
            result = await case.intake().prepare(items)
        assert result.input[0]["content"] == [{"type": "input_text", "text": "Hi"}]
        assert result.notes == (
            "An image was left out: the link is a text/html file, not an image.",
        )

    scenario_with(owui, body)


def test_an_oversized_link_is_refused_and_the_other_attachments_still_go(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        big = b"\x89PNG" + b"0" * 5000
        async with (
            server(Counting(big, "image/png")) as big_port,
            server(Counting(PNG, "image/png")) as ok_port,
        ):
            items = [
                user(
                    {"type": "input_image", "image_url": f"http://127.0.0.1:{big_port}/big.png"},
                    {"type": "input_image", "image_url": f"http://127.0.0.1:{ok_port}/ok.png"},
                )
            ]
            result = await case.intake(remote_max_bytes=4096).prepare(items)
        content = result.input[0]["content"]
        assert [p["type"] for p in content] == ["input_text", "input_image"]
        assert content[1]["image_url"] == data_url(PNG, "image/png")
        (note,) = result.notes
        assert note.startswith("An image was left out: ") and "4 KB" in note

    scenario_with(owui, body)


def test_a_private_address_is_refused_without_a_connection(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        handler = Counting(PNG, "image/png")
        # The production downloader: no loopback allowance.
        production = Downloader(limits=DownloadLimits(allow_http_hosts={"127.0.0.1"}))
        intake = Intake(
            limits=IntakeLimits(), fetcher=production, store=case.store, owner=case.owner
        )
        async with server(handler) as port:
            items = [user({"type": "input_image", "image_url": f"http://127.0.0.1:{port}/a.png"})]
            result = await intake.prepare(items)
        await production.aclose()
        assert handler.hits == 0
        assert result.input[0]["content"] == [{"type": "input_text", "text": "Hi"}]
        (note,) = result.notes
        assert (
            note.startswith("An image was left out: the address was refused: ")
            and "loopback" in note
        )

    scenario_with(owui, body)


def test_file_links_pass_through_unless_a_copy_is_wanted(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        handler = Counting(PDF, "application/pdf")
        async with server(handler) as port:
            url = f"http://127.0.0.1:{port}/docs/report.pdf"
            part = {"type": "input_file", "file_url": url}
            passed = await case.intake(save_remote_file_urls=False).prepare([user(part)])
            assert handler.hits == 0 and passed.input[0]["content"][1] == part
            kept = await case.intake(save_remote_file_urls=True).prepare([user(part)])
        assert handler.hits == 1
        assert kept.input[0]["content"][1] == {
            "type": "input_file",
            "file_data": data_url(PDF, "application/pdf"),
            "filename": "report.pdf",
        }
        (copy,) = kept.stored
        assert (await case.store.read(copy, reader=case.owner, limit_bytes=1 << 20)).data == PDF

    scenario_with(owui, body)


def test_inline_data_is_copied_into_storage_and_still_sent_inline(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        pdf = data_url(PDF, "application/pdf")
        part = {"type": "input_file", "file_data": pdf, "filename": "notes.pdf"}
        result = await case.intake(save_file_data_content=True).prepare([user(part)])
        assert result.input[0]["content"][1] == part
        (copy,) = result.stored
        row = await case.owui.files.Files.get_file_by_id(copy)
        assert row.filename == "notes.pdf" and row.meta["content_type"] == "application/pdf"
        none = await case.intake(save_file_data_content=False).prepare([user(part)])
        assert none.stored == ()

    scenario_with(owui, body)


# -- videos ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "youtube"),
    [
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", True),
        ("https://youtube.com/watch?feature=share&v=dQw4w9WgXcQ", True),
        ("https://youtu.be/dQw4w9WgXcQ", True),
        ("https://m.youtube.com/shorts/dQw4w9WgXcQ", True),
        ("https://www.youtube.com.evil.test/watch?v=dQw4w9WgXcQ", False),
        ("https://evil.test/youtu.be/dQw4w9WgXcQ", False),
        ("https://youtu.be/", False),
    ],
)
def test_youtube_links_are_recognised(url: str, youtube: bool) -> None:
    assert is_youtube(url) is youtube


def test_videos_are_vetted_never_downloaded(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        handler = Counting(b"\x00\x00\x00\x18ftypmp42", "video/mp4")
        async with server(handler) as port:
            local = f"http://127.0.0.1:{port}/clip.mp4"
            items = [
                user(
                    {"type": "input_video", "video_url": "https://youtu.be/dQw4w9WgXcQ"},
                    {"type": "input_video", "video_url": local},
                )
            ]
            refused = await case.intake(allow_loopback=False).prepare(items)
            allowed = await case.intake(allow_loopback=True).prepare(items)
        assert handler.hits == 0  # never fetched, either way
        assert [p.get("video_url") for p in refused.input[0]["content"][1:]] == [
            "https://youtu.be/dQw4w9WgXcQ"
        ]
        (note,) = refused.notes
        assert note.startswith("A video link was left out: it was refused: ") and "loopback" in note
        assert [p.get("video_url") for p in allowed.input[0]["content"][1:]] == [
            "https://youtu.be/dQw4w9WgXcQ",
            local,
        ]

    scenario_with(owui, body)


def test_a_stored_video_is_inlined_within_the_video_limit(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        clip = b"\x00\x00\x00\x18ftypmp42" + b"v" * 2000
        video_id = await case.store.save(
            clip, media_type="video/mp4", filename="c.mp4", owner=case.owner
        )
        items = [user({"type": "input_video", "video_url": content_url(video_id)})]
        ok = await case.intake().prepare(items)
        assert ok.input[0]["content"][1]["video_url"] == data_url(clip, "video/mp4")
        small = await case.intake(video_max_bytes=1024).prepare(items)
        assert small.input[0]["content"] == [{"type": "input_text", "text": "Hi"}]
        (note,) = small.notes
        assert note.startswith("A video was left out: the file 'c.mp4' is ")

    scenario_with(owui, body)


# -- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("valve_mb", "rag", "expected_mb"),
    [
        (50, None, 50),  # RAG off or no limit: the valve
        (50, 200, 200),  # the valve at its default follows a larger RAG limit
        (50, 10, 10),
        (100, 20, 20),  # otherwise the smaller wins
        (10, 200, 10),
    ],
)
def test_the_remote_limit_is_clamped_by_open_webuis_rag_limit(
    valve_mb: int, rag: int | None, expected_mb: int
) -> None:
    rag_bytes = None if rag is None else rag * 1024 * 1024
    assert effective_remote_limit(valve_mb, rag_bytes) == expected_mb * 1024 * 1024


def test_downloads_of_one_request_are_bounded(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        running = peak = 0

        async def slow(head: bytes, writer: asyncio.StreamWriter) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            await answer("200 OK", PNG, Content_Type="image/png")(head, writer)

        async with server(slow) as port:
            parts = [
                {"type": "input_image", "image_url": f"http://127.0.0.1:{port}/{n}.png"}
                for n in range(7)
            ]
            result = await case.intake(per_request=2, save_remote_file_urls=False).prepare(
                [user(*parts)]
            )
        assert peak == 2
        assert [p["image_url"] for p in result.input[0]["content"][1:]] == [
            data_url(PNG, "image/png")
        ] * 7

    scenario_with(owui, body)


# -- generated images --------------------------------------------------------------------


def test_a_generated_image_is_stored_and_shown_as_a_link(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        images = GeneratedImages(
            store=case.store,
            user={"id": case.owner.id, "email": case.owner.email},
            fetcher=None,
            max_bytes=1 << 20,
        )
        item = {
            "type": "image_generation_call",
            "id": "ig_1",
            "status": "completed",
            "result": base64.b64encode(PNG).decode(),
            "output_format": "png",
        }
        shown = await images.shown(OutputItem(request_id="r1", item=item))
        assert isinstance(shown, TextDelta)
        (file_id,) = images.stored
        assert shown.text == f"\n\n![Generated image](/api/v1/files/{file_id}/content)\n\n"
        row = await case.owui.files.Files.get_file_by_id(file_id)
        assert row.user_id == case.owner.id
        assert row.filename.startswith("generated-image-") and row.filename.endswith(".png")
        assert (await case.store.read(file_id, reader=case.owner, limit_bytes=1 << 20)).data == PNG

        webp = {**item, "result": data_url(b"RIFF....WEBP", "image/webp")}
        await images.shown(OutputItem(request_id="r1", item=webp))
        second = await case.owui.files.Files.get_file_by_id(images.stored[-1])
        assert second.meta["content_type"] == "image/webp" and second.filename.endswith(".webp")

        other = TextDelta(request_id="r1", text="hello")
        assert await images.shown(other) is other

    scenario_with(owui, body)


def test_a_generated_image_that_cannot_be_stored_says_why(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        item = {
            "type": "image_generation_call",
            "id": "ig_1",
            "result": base64.b64encode(PNG * 100).decode(),
        }
        small = GeneratedImages(store=case.store, user=None, fetcher=None, max_bytes=1024)
        shown = await small.shown(OutputItem(request_id="r1", item=item))
        assert isinstance(shown, TextDelta) and small.stored == []
        assert shown.text.startswith(
            "\n\n*A generated image could not be shown: the generated image is "
        )
        nowhere = GeneratedImages(store=None, user=None, fetcher=None, max_bytes=1 << 20)
        shown = await nowhere.shown(
            OutputItem(request_id="r1", item={**item, "result": base64.b64encode(PNG).decode()})
        )
        assert "Open WebUI's file store is not available" in shown.text  # type: ignore[union-attr]
        empty = await nowhere.shown(
            OutputItem(request_id="r1", item={"type": "image_generation_call", "status": "failed"})
        )
        assert empty == TextDelta(request_id="r1", text="")

    scenario_with(owui, body)


def test_a_generated_image_without_a_user_is_owned_by_the_fallback_owner(owui: OwuiModules) -> None:  # noqa: F811
    async def body(case: Case) -> None:
        images = GeneratedImages(store=case.store, user=None, fetcher=None, max_bytes=1 << 20)
        item = {"type": "image_generation_call", "result": base64.b64encode(PNG).decode()}
        await images.shown(OutputItem(request_id="r1", item=item))
        row = await case.owui.files.Files.get_file_by_id(images.stored[0])
        fallback = await case.store.fallback_owner()
        assert row.user_id == fallback.id and fallback.role == "pending"

    scenario_with(owui, body)
