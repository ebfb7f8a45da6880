"""What ``owui-real`` measures: this project, put into Open WebUI's virtualenv as a wheel would be.

Owns choosing the tree (the working tree, or with ``--ref`` the tree of a
commit, exported with ``git archive`` so a baseline is clean of edits in
progress), noting which code was measured (``code_state``), and installing
that tree into the virtualenv ``make owui-smoke`` created, its dependencies
resolved against Open WebUI's pins. Blocking; run before the trio run starts.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orpipe.bench.owui_real_servers import SetupError
from orpipe.bench.owui_smoke import OWUI_VERSION

__all__ = ["REPO", "code_state", "export_tree", "install_measured", "install_tree"]

REPO = Path(__file__).resolve().parents[1]


def export_tree(ref: str, into: Path) -> str:
    """``git archive`` of ``ref`` unpacked into ``into``; returns the commit it names."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def install_tree(venv: Path, tree: Path) -> None:
    """This project from ``tree`` into Open WebUI's virtualenv, as ``make owui-smoke`` does
    (a wheel, its dependencies resolved against Open WebUI's pins)."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import importlib.metadata as m; print(m.version('open-webui'))"]
    found = subprocess.run(probe, capture_output=True, text=True, check=False).stdout.strip()
    if found != OWUI_VERSION:
        raise SetupError(
            f"{venv} has no Open WebUI {OWUI_VERSION} (found {found or 'none'}); "
            "`make owui-smoke` creates it"
        )
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(tree)], check=True)
    subprocess.run([*pip, str(tree)], check=True)


def install_measured(
    *,
    ref: str | None,
    venv: Path | None,
    code: dict[str, Any],
    cleanup: list[Path],
    say: Callable[[str], None],
) -> Path:
    """Put the measured tree into ``venv`` (None: leave it as it is); return that tree.

    ``ref`` None measures the working tree; otherwise the tree of ``ref`` is
    exported to a temporary directory, added to ``cleanup``. What was measured
    is noted in ``code`` (``code_state()``'s dict).
    """
    if ref is not None:
        # Outside the repository: a copy under bench/ would be type-checked as part of it.
        tree = Path(tempfile.mkdtemp(prefix="orpipe-owui-real-tree-"))
        cleanup.append(tree)
        commit = export_tree(ref, tree)
        code.update(measured=f"{ref} = {commit}", uncommitted=[])
        say(f"measuring {ref} ({commit[:12]}), exported to {tree}")
    else:
        tree = REPO
        code["measured"] = "working tree"
        if code["uncommitted"]:
            say(
                f"note: measuring a working tree with {len(code['uncommitted'])} uncommitted "
                "file(s) under engine/, actors/, adapters/ (--ref HEAD measures the commit)"
            )
    if venv is not None:
        say(
            f"installing {'the export' if ref else 'this working tree'} into "
            f"{venv} (--no-install skips this)"
        )
        install_tree(venv, tree)
    else:
        code["installed"] = "left as it was (--no-install)"
    return tree


def code_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    dirty = git("status", "--porcelain", "--", "engine", "actors", "adapters")
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": dirty.splitlines()}
