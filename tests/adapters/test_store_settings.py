"""The artifact store's settings: built from the valves on the Open WebUI side, read by the store.

``StoreSettings`` never shows a secret (repr, key); ``store_settings_for``
takes Open WebUI's own database and Redis as defaults; ``open_store`` opens a
working store from the settings alone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orpipe.adapters.openwebui.valves import Valves
from orpipe.adapters.openwebui.valves.engine_settings import (
    default_database_url,
    store_factory_for,
    store_settings_for,
)
from orpipe.adapters.store.assembly import open_store
from orpipe.adapters.store.settings import StoreSettings
from orpipe.engine.artifacts import Artifact

if TYPE_CHECKING:  # imported by pytest as a plugin below (so that it is assertion-rewritten)
    from tests.redis_support import RedisServer

# The fixture redis_server (a plugin, as in test_redis_writebehind).
pytest_plugins = ["tests.redis_support"]

KEY = "a long random passphrase for the store"
DB_PASSWORD = "db-pass-w0rd"
REDIS_PASSWORD = "redis-pass-w0rd"


@pytest.fixture(autouse=True)
def no_host_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "WEBUI_SECRET_KEY", "WEBUI_JWT_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))


def settings(**changes: object) -> StoreSettings:
    valves = Valves.model_validate({"ARTIFACT_ENCRYPTION_KEY": KEY, **changes})
    built = store_settings_for(valves, pipe_id="orpipe")
    assert built is not None
    return built


def test_secrets_appear_neither_in_repr_nor_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:{REDIS_PASSWORD}@localhost:6379/0")
    built = settings(ARTIFACT_DATABASE_URL=f"postgresql+psycopg://u:{DB_PASSWORD}@db/owui")
    for text in (repr(built), str(built), repr(built.key())):
        for secret in (KEY, DB_PASSWORD, REDIS_PASSWORD):
            assert secret not in text


def test_the_key_changes_with_what_the_store_is_built_from() -> None:
    assert settings().key() == settings().key()
    assert settings(ARTIFACT_ENCRYPTION_KEY="another long passphrase!").key() != settings().key()
    assert settings(DB_BATCH_SIZE=5).key() != settings().key()


def test_nothing_is_stored_when_nothing_is_kept() -> None:
    valves = Valves(PERSIST_REASONING_TOKENS="disabled", PERSIST_TOOL_RESULTS=False)
    assert store_settings_for(valves, pipe_id="orpipe") is None
    assert store_factory_for(valves, pipe_id="orpipe") == (None, None)


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("postgres://u@db/owui", "postgresql+psycopg://u@db/owui"),
        ("postgresql://u@db/owui", "postgresql+psycopg://u@db/owui"),
        ("sqlite+aiosqlite:///data/webui.db", "sqlite:///data/webui.db"),
    ],
)
def test_open_webuis_database_is_the_default(
    monkeypatch: pytest.MonkeyPatch, database_url: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert default_database_url() == expected
    assert settings().database_url == expected


def test_without_any_database_sqlite_lands_in_data_dir(tmp_path: Path) -> None:
    assert settings().database_url == f"sqlite:///{tmp_path / 'orpipe-artifacts.db'}"


def test_redis_only_where_open_webui_runs_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().redis_url is None
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    assert settings().redis_url == "redis://localhost:6379/0"
    assert settings(ENABLE_REDIS_CACHE=False).redis_url is None


async def test_the_factory_opens_a_working_store() -> None:
    factory, key = store_factory_for(Valves(ARTIFACT_ENCRYPTION_KEY=KEY), pipe_id="orpipe")
    assert factory is not None and key == settings().key()
    artifact = Artifact(
        chat_id="chat-1", message_id="msg-1", item_type="reasoning", payload={"text": "why"}
    )
    async with factory() as store:
        await store.write([artifact])
    async with open_store(settings()) as store:  # a new generation reads what the last wrote
        assert await store.fetch("chat-1", [artifact.artifact_id]) == {
            artifact.artifact_id: artifact
        }


async def test_the_bounds_of_the_rows_a_writer_holds_come_from_the_settings(
    redis_server: RedisServer,
) -> None:
    bounded = dataclasses.replace(
        settings(), redis_url=redis_server.url, held_max_rows=7, held_max_bytes=4096
    )
    assert bounded.key() != dataclasses.replace(bounded, held_max_rows=8).key()
    async with open_store(bounded) as store:
        figures = store.statistics()  # what Engine.statistics().store shows
    assert (figures["held_capacity"], figures["held_max_bytes"]) == (7, 4096)
