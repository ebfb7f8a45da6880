"""Imports flow one way, and each world's code lives in its own folder.

engine ← actors ← adapters / bench. Inside adapters/, asyncio lives only in
``openwebui/`` (Open WebUI's loop) and ``bridge/`` (the door between the loops);
Open WebUI itself is imported only in ``openwebui/``; ``openwebui/`` runs no trio;
storage, transport and telemetry know nothing of Open WebUI or of the bridge.
Every module is installed under the one top-level name ``orpipe``.
"""

from __future__ import annotations

import ast
import importlib
import re
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
#: The adapters' worlds: which sub-packages may use asyncio and Open WebUI, and
#: which other sub-packages each one may import.
ASYNCIO_FOLDERS = {"adapters/openwebui", "adapters/bridge"}
OPEN_WEBUI_FOLDERS = {"adapters/openwebui"}
ADAPTER_WORLDS = {"bridge", "cluster", "openrouter", "openwebui", "store", "telemetry"}
MAY_IMPORT = {
    "openwebui": {"bridge", "cluster", "openrouter", "store", "telemetry", "openwebui"},
    "bridge": {"openrouter", "bridge"},
    "openrouter": {"openrouter"},
    "store": {"store"},
    # The ledger drives Redis through the store's one client-in-threads wrapper.
    "cluster": {"cluster", "store"},
    # The fan-in reaches Redis through the store's one door (redis_link).
    "telemetry": {"telemetry", "store"},
}
_OWUI_NAME = re.compile(r"[\"']open_webui[.\"']")


def imported_names(path: Path) -> set[str]:
    """Every dotted name a module imports, ``orpipe.`` taken off our own."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.removeprefix("orpipe.") for name in names}


def imported_modules(path: Path) -> set[str]:
    """The top-level packages a module imports (ours named without ``orpipe.``)."""
    return {name.split(".")[0] for name in imported_names(path)}


def package_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no files found in {package}/"
    return files


def folder_of(path: Path) -> str:
    return path.parent.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package: str) -> None:
    for path in package_files(package):
        bad = imported_modules(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("package", ["engine", "actors", "bench", "adapters"])
def test_asyncio_only_in_the_open_webui_and_bridge_folders(package: str) -> None:
    for path in package_files(package):
        if path.relative_to(ROOT).as_posix() in ASYNCIO_EXEMPT:
            continue
        if folder_of(path) in ASYNCIO_FOLDERS:
            continue
        assert "asyncio" not in imported_modules(path), f"{path.relative_to(ROOT)} imports asyncio"


def test_the_asyncio_exemption_is_one_bench_module_that_needs_it() -> None:
    assert len(ASYNCIO_EXEMPT) == 1
    for name in ASYNCIO_EXEMPT:
        assert name.startswith("bench/")
        assert "asyncio" in imported_modules(ROOT / name), f"{name} no longer needs the exemption"


@pytest.mark.parametrize("package", ["engine", "actors", "adapters"])
def test_open_webui_is_imported_only_in_its_folder(package: str) -> None:
    for path in package_files(package):
        if folder_of(path) in OPEN_WEBUI_FOLDERS:
            continue
        text = path.read_text(encoding="utf-8")
        assert "open_webui" not in imported_modules(path) and not _OWUI_NAME.search(text), (
            f"{path.relative_to(ROOT)} reaches into Open WebUI"
        )


def test_the_open_webui_folder_runs_no_trio() -> None:
    for path in package_files("adapters/openwebui"):
        assert "trio" not in imported_modules(path), f"{path.relative_to(ROOT)} imports trio"


@pytest.mark.parametrize("world", sorted(ADAPTER_WORLDS))
def test_each_adapter_world_imports_only_the_worlds_below_it(world: str) -> None:
    for path in package_files(f"adapters/{world}"):
        for name in imported_names(path):
            parts = name.split(".")
            if parts[0] == "adapters" and len(parts) > 1 and parts[1] in ADAPTER_WORLDS:
                assert parts[1] in MAY_IMPORT[world], (
                    f"{path.relative_to(ROOT)} imports adapters.{parts[1]}"
                )


def test_every_adapter_module_lives_in_a_world() -> None:
    loose = {p.name for p in (ROOT / "adapters").glob("*.py")}
    # The package's face, and the Function file Open WebUI loads (its path is documented).
    assert loose == {"__init__.py", "owui_pipe.py"}
    assert {p.name for p in (ROOT / "adapters").iterdir() if p.is_dir() and p.name[0] != "_"} == (
        ADAPTER_WORLDS
    )


@pytest.mark.parametrize("package", ["engine", "actors"])
def test_engine_and_actors_import_no_io_library(package: str) -> None:
    for path in package_files(package):
        bad = imported_modules(path) & IO_LIBRARIES
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import asyncio\nfrom orpipe.actors.graph import open_engine\n"
        "from orpipe.adapters.openwebui import valves\n",
        encoding="utf-8",
    )
    assert imported_modules(probe) == {"asyncio", "actors", "adapters"}
    assert "adapters.openwebui" in imported_names(probe)


@pytest.mark.parametrize("package", ["engine", "actors", "adapters"])
def test_public_names_are_sorted_and_exported(package: str) -> None:
    module = importlib.import_module(f"orpipe.{package}")
    names = module.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(module, name), f"{package}.{name} is in __all__ but missing"


def engine_import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Which modules of a package each of its modules imports (``if TYPE_CHECKING`` too).

    Modules are named by their file's stem (``__init__`` for the package itself);
    ``import engine.x`` and ``from engine.x import y`` point at ``x``, and
    ``from engine import y`` at ``y`` when it is a module, else at ``__init__``.
    """
    package = package_dir.name
    modules = {path.stem for path in package_dir.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(package_dir.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                dotted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(filter(None, [package, base]))
                dotted = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in dotted:
                parts = name.removeprefix("orpipe.").split(".")
                if parts[0] != package:
                    continue
                if len(parts) == 1:
                    if isinstance(node, ast.Import):
                        targets.add("__init__")
                elif parts[1] in modules:
                    targets.add(parts[1])
                elif len(parts) == 2 and isinstance(node, ast.ImportFrom) and name != node.module:
                    targets.add("__init__")  # from engine import SomeName
        targets.discard(path.stem)
        graph[path.stem] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_stack:
                return [*stack[stack.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_engine_modules_import_each_other_without_a_cycle() -> None:
    graph = engine_import_graph(ROOT / "engine")
    assert graph["json_values"] == set(), (
        "engine.json_values is a leaf: it imports no engine module"
    )
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in engine/: " + " → ".join(
        f"engine.{name}" for name in cycle or []
    )


def test_the_cycle_checker_sees_a_cycle(tmp_path: Path) -> None:
    package = tmp_path / "engine"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "a.py").write_text("from engine.b import x\n", encoding="utf-8")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine import c\n",
        encoding="utf-8",
    )
    (package / "c.py").write_text("import engine.a\n", encoding="utf-8")
    graph = engine_import_graph(package)
    assert graph == {"__init__": set(), "a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    (package / "c.py").write_text("import json\n", encoding="utf-8")
    assert find_cycle(engine_import_graph(package)) is None


def test_open_engine_is_one_public_name() -> None:
    assert "open_engine" in importlib.import_module("orpipe.actors").__all__
    for name in ("orpipe.engine", "orpipe.engine.supervisor"):
        module = importlib.import_module(name)
        assert not hasattr(module, "open_engine"), f"{name} has its own open_engine"
