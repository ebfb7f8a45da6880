"""Open WebUI 0.12.4's own files, users, config and storage, on a throwaway data directory.

``make owui-lib`` installs Open WebUI's wheel (without torch and the RAG stack)
and the pinned part of its dependencies that these modules import. Importing
``open_webui.config`` runs Open WebUI's database migrations, so the tests get
its real ``webui.db`` schema in a temporary ``DATA_DIR`` and its local storage
provider writing under ``DATA_DIR/uploads``.

Open WebUI reads its environment once, at import; the variables are set for
that import only and the process's environment and logging are put back
afterwards, so no other test sees them.

Its async engine pools connections, and a pooled connection belongs to the
loop that opened it: every test runs inside ``owui_loop_scope``, which
disposes of the pool before its loop ends.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@dataclass(frozen=True)
class OwuiModules:
    files: ModuleType
    users: ModuleType
    config: ModuleType
    storage: ModuleType
    db: ModuleType
    data_dir: Path


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture(scope="session")
def owui(tmp_path_factory: pytest.TempPathFactory) -> OwuiModules:
    """Open WebUI's modules, imported once per test session on a fresh data directory."""
    base = tmp_path_factory.mktemp("owui")
    frontend = base / "frontend"
    (frontend / "static").mkdir(parents=True)
    data = base / "data"
    data.mkdir()
    env = {
        "DATA_DIR": str(data),
        "FRONTEND_BUILD_DIR": str(frontend),
        "WEBUI_SECRET_KEY": secrets.token_hex(16),
        # The default (chroma) would import the vector store; none is needed here.
        "VECTOR_DB": "qdrant",
        "GLOBAL_LOG_LEVEL": "WARNING",
    }
    # Open WebUI's own deprecation warnings at import are not this project's to fix.
    with _environment(env), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = {
            name: importlib.import_module(f"open_webui.{name}")
            for name in ("models.files", "models.users", "models.config", "storage.provider")
        }
        db = importlib.import_module("open_webui.internal.db")
    return OwuiModules(
        files=modules["models.files"],
        users=modules["models.users"],
        config=modules["models.config"],
        storage=modules["storage.provider"],
        db=db,
        data_dir=data,
    )


@asynccontextmanager
async def owui_loop_scope(owui: OwuiModules) -> AsyncIterator[None]:
    """Use Open WebUI's database from this loop; its pool is emptied before the loop ends."""
    try:
        yield
    finally:
        await owui.db.async_engine.dispose()


async def new_user(owui: OwuiModules, *, role: str = "user", name: str = "Ada") -> Any:
    user_id = f"u-{secrets.token_hex(6)}"
    return await owui.users.Users.insert_new_user(
        user_id, name, f"{user_id}@example.org", role=role
    )
