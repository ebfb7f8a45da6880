"""``OwuiFiles`` against Open WebUI 0.12.4's own code: its database, its storage, its users."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from orpipe.adapters.openwebui.files import (
    Owner,
    OwuiFiles,
    StoredFileError,
    content_url,
    internal_file_id,
)
from tests.adapters.asyncio_support import run_on
from tests.adapters.owui_storage import OwuiModules, new_user, owui, owui_loop_scope  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def files_store(email: str = "robot@example.org") -> OwuiFiles:
    return OwuiFiles(fallback_email=email, fallback_name="Robot", fallback_role="pending")


def owner_of(user: object) -> Owner:
    return Owner(id=user.id, email=user.email, name=user.name, role=user.role)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("url", "file_id"),
    [
        ("/api/v1/files/3f2a-19/content", "3f2a-19"),
        ("/api/v1/files/3f2a-19", "3f2a-19"),
        ("https://chat.example.org/api/v1/files/abc_1/content?x=1", "abc_1"),
        ("  /api/v1/files/abc/content/  ", "abc"),
        ("/files/abc/content", None),  # the original's loose "/files/" match is gone
        ("/api/v1/files/../../etc/passwd", None),
        ("https://example.org/image.png", None),
        ("data:image/png;base64,AAAA", None),
        ("/api/v1/files//content", None),
    ],
)
def test_internal_file_urls_are_recognised_strictly(url: str, file_id: str | None) -> None:
    assert internal_file_id(url) == file_id


def test_a_saved_file_is_a_real_open_webui_file_its_owner_can_read(owui: OwuiModules) -> None:  # noqa: F811
    async def scenario() -> None:
        async with owui_loop_scope(owui):
            store = files_store()
            ada = owner_of(await new_user(owui))
            file_id = await store.save(
                PNG, media_type="image/png", filename="../../chart.png", owner=ada
            )
            row = await owui.files.Files.get_file_by_id(file_id)
            assert row is not None and row.user_id == ada.id
            # Stored the way Open WebUI's upload route stores: <id>_<name>, with meta.
            assert row.filename == "chart.png"  # no path parts survive
            assert Path(row.path).name == f"{file_id}_chart.png"
            assert await asyncio.to_thread(Path(row.path).read_bytes) == PNG
            assert row.meta["content_type"] == "image/png"
            assert row.meta["size"] == len(PNG)
            assert row.meta["file_hash"] == hashlib.sha256(PNG).hexdigest()
            assert content_url(file_id) == f"/api/v1/files/{file_id}/content"

            got = await store.read(file_id, reader=ada, limit_bytes=1024 * 1024)
            assert (got.data, got.media_type, got.filename) == (PNG, "image/png", "chart.png")

    run_on("asyncio", scenario)


def test_another_users_file_reads_as_not_found_but_an_admin_may_read_it(
    owui: OwuiModules,  # noqa: F811
) -> None:
    async def scenario() -> None:
        async with owui_loop_scope(owui):
            store = files_store()
            ada, bob = owner_of(await new_user(owui)), owner_of(await new_user(owui, name="Bob"))
            admin = owner_of(await new_user(owui, role="admin", name="Root"))
            file_id = await store.save(PNG, media_type="image/png", filename="a.png", owner=ada)
            with pytest.raises(StoredFileError) as refused:
                await store.read(file_id, reader=bob, limit_bytes=1 << 20)
            with pytest.raises(StoredFileError) as missing:
                await store.read("no-such-file", reader=bob, limit_bytes=1 << 20)
            # Refused and missing read the same: nobody learns which ids exist.
            assert refused.value.reason == f"the file {file_id} was not found"
            assert missing.value.reason == "the file no-such-file was not found"
            assert (await store.read(file_id, reader=admin, limit_bytes=1 << 20)).data == PNG

    run_on("asyncio", scenario)


def test_a_stored_file_over_the_limit_is_refused_with_its_size(owui: OwuiModules) -> None:  # noqa: F811
    async def scenario() -> None:
        async with owui_loop_scope(owui):
            store = files_store()
            ada = owner_of(await new_user(owui))
            big = b"x" * (3 * 1024 * 1024 // 2)
            file_id = await store.save(
                big, media_type="application/pdf", filename="r.pdf", owner=ada
            )
            with pytest.raises(StoredFileError, match=r"'r.pdf' is 1.5 MB, over the 1 MB limit"):
                await store.read(file_id, reader=ada, limit_bytes=1024 * 1024)

    run_on("asyncio", scenario)


def test_the_fallback_owner_is_created_once_cannot_log_in_and_is_found_again(
    owui: OwuiModules,  # noqa: F811
) -> None:
    async def scenario() -> None:
        async with owui_loop_scope(owui):
            store = files_store("automation@example.org")
            owners = await asyncio.gather(*(store.owner_for(None) for _ in range(5)))
            assert len({o.id for o in owners}) == 1  # one creation, under the lock
            owner = owners[0]
            assert (owner.email, owner.name, owner.role) == (
                "automation@example.org",
                "Robot",
                "pending",
            )
            row = await owui.users.Users.get_user_by_id(owner.id)
            assert row.role == "pending"
            ((_provider, entry),) = row.oauth.items()
            assert entry["sub"].startswith("orpipe-storage:") and len(entry["sub"]) > 40
            # No password row: even a check that accepts any password finds nothing.
            auths = __import__("open_webui.models.auths", fromlist=["Auths"]).Auths

            async def any_password(_hash: str) -> bool:
                return True

            assert await auths.authenticate_user(owner.email, any_password) is None
            # A new process finds the same account by its e-mail.
            again = await files_store("automation@example.org").owner_for({})
            assert again.id == owner.id
            # A chat user owns their own uploads.
            ada = await new_user(owui)
            mine = await store.owner_for({"id": ada.id, "email": ada.email, "role": "user"})
            assert mine.id == ada.id

    run_on("asyncio", scenario)


def test_a_privileged_fallback_role_is_never_created(owui: OwuiModules) -> None:  # noqa: F811
    async def scenario() -> None:
        async with owui_loop_scope(owui):
            store = OwuiFiles(
                fallback_email="root-bot@example.org", fallback_name="Bot", fallback_role="admin"
            )
            owner = await store.fallback_owner()
            assert owner.role == "pending"

    run_on("asyncio", scenario)


def test_the_rag_file_limit_follows_open_webuis_config(owui: OwuiModules) -> None:  # noqa: F811
    async def scenario() -> None:
        async with owui_loop_scope(owui):
            store = files_store()
            config = owui.config.Config
            assert await store.rag_file_limit_bytes() is None  # no limit set
            await config.upsert({"rag.file.max_size": 20})
            assert await store.rag_file_limit_bytes() == 20 * 1024 * 1024
            await config.upsert({"rag.file.max_size": 900})
            assert await store.rag_file_limit_bytes() == 500 * 1024 * 1024  # capped
            await config.upsert({"rag.bypass_embedding_and_retrieval": True})
            assert await store.rag_file_limit_bytes() is None  # RAG off: no clamp
            await config.upsert(
                {"rag.bypass_embedding_and_retrieval": False, "rag.file.max_size": None}
            )

    run_on("asyncio", scenario)


def test_outside_open_webui_there_is_no_file_store_and_open_webui_is_not_started() -> None:
    """A fresh process (the bench, an API test): Open WebUI's start-up never runs."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    probe = (
        "import asyncio, sys\n"
        "from adapters.openwebui.files import OwuiFiles, FileStoreUnavailable\n"
        "store = OwuiFiles(fallback_email='b@x.org', fallback_name='B')\n"
        "try:\n"
        "    asyncio.run(store.owner_for(None))\n"
        "except FileStoreUnavailable as exc:\n"
        "    print('refused:', exc.reason)\n"
        "print('imported:', 'open_webui' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == [
        "refused: this pipe is not running inside Open WebUI",
        "imported: False",
    ]
