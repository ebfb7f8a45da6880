"""Imports flow one way: engine ← actors ← adapters / bench; asyncio only in adapters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "engine": {"actors", "adapters", "bench"},
    "actors": {"adapters", "bench"},
    "adapters": {"bench"},
}
IO_LIBRARIES = {"httpx", "redis", "sqlalchemy", "psycopg", "hypercorn"}
#: The one module outside adapters/ allowed to import asyncio: the Open WebUI bench
#: must drive the asyncio adapter (the pipe) on an asyncio loop, the way Open WebUI
#: does, to measure it. Everything else in bench/ stays on trio.
ASYNCIO_EXEMPT = {"bench/owui_load.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def package_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no files found in {package}/"
    return files


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    for path in package_files(package):
        bad = imported_modules(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", ["engine", "actors", "bench"])
def test_asyncio_only_in_adapters(package: str) -> None:
    for path in package_files(package):
        if path.relative_to(ROOT).as_posix() in ASYNCIO_EXEMPT:
            continue
        assert "asyncio" not in imported_modules(path), f"{path.relative_to(ROOT)} imports asyncio"


def test_the_asyncio_exemption_is_one_bench_module_that_needs_it() -> None:
    assert len(ASYNCIO_EXEMPT) == 1
    for name in ASYNCIO_EXEMPT:
        assert name.startswith("bench/")
        assert "asyncio" in imported_modules(ROOT / name), f"{name} no longer needs the exemption"


@pytest.mark.parametrize("package", ["engine", "actors"])
def test_engine_and_actors_import_no_io_library(package: str) -> None:
    for path in package_files(package):
        bad = imported_modules(path) & IO_LIBRARIES
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import asyncio\nfrom actors.graph import open_engine\n", encoding="utf-8")
    assert imported_modules(probe) == {"asyncio", "actors"}


@pytest.mark.parametrize("package", ["engine", "actors", "adapters"])
def test_public_names_are_sorted_and_exported(package: str) -> None:
    module = __import__(package)
    names = module.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but missing"
