"""The installed distribution: one top-level name, ``orpipe``, and every module in it.

Installing orpipe into Open WebUI's Python must not add ``engine``, ``actors``,
``adapters`` or ``bench`` to its site-packages (other projects on the package
index use those names), so the repository's folders are installed as
``orpipe.engine``, ``orpipe.actors``, ... This builds the wheel as pip would.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("engine", "actors", "adapters", "bench")
_NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "results")


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # Built from a copy: setuptools leaves build/ behind, and a stale build/lib
    # would carry deleted modules into the wheel.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=_NOT_SHIPPED)
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"]
    subprocess.run(
        [*pip_wheel, "--no-build-isolation", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("orpipe-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_has_one_top_level_name(wheel_names: set[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"orpipe"}


def test_every_module_and_data_file_of_the_folders_is_in_the_wheel(wheel_names: set[str]) -> None:
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT)
            if "results" in relative.parts or "__pycache__" in relative.parts or path.is_dir():
                continue
            assert f"orpipe/{relative.as_posix()}" in wheel_names, f"{relative} is not installed"


def test_the_wheel_knows_nothing_of_the_four_old_names() -> None:
    # Every import of our own code goes through ``orpipe.``: an import of
    # ``engine`` would work in the checkout and fail once installed.
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = (
                    [alias.name for alias in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and node.level == 0
                    else []
                )
                for name in names:
                    assert name.split(".")[0] not in FOLDERS, (
                        f"{path.relative_to(ROOT)} imports {name}: use orpipe.{name}"
                    )
