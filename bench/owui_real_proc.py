"""What a server process has used so far, read from ``/proc`` (Linux; standard library only).

Shared by the ``owui-real`` bench's two sides: its orchestrator (``bench.owui_real``, in this
project's virtualenv) and its chat driver (``bench.owui_real_driver``, in Open WebUI's), so
nothing here imports anything outside the standard library.

A server is measured as its process *tree*: the process and every live descendant. CPU is
``utime + stime`` of ``/proc/<pid>/stat`` (the kernel sums every thread of a process into
it), in seconds; memory is the resident set (``/proc/<pid>/statm``). A descendant that exits
inside a window takes its CPU with it (the parent's ``cutime`` only grows once it is reaped),
which is why the tree is read, not just the one process; Open WebUI 0.12.4 runs as one
process (uvicorn, one worker), so in practice the tree is that process.

``machine_busy_s`` is every CPU's busy time so far (``/proc/stat``), so a run can tell how
much of a window went to processes that are not its own (another bench on the machine).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "TreeSample",
    "machine_busy_s",
    "parse_proc_stat",
    "parse_stat",
    "process_tree",
    "sample_tree",
]

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MIB = 1024.0 * 1024.0


@dataclass(frozen=True, slots=True)
class TreeSample:
    """CPU seconds used so far and resident MiB now, of one process tree."""

    cpu_s: float
    rss_mib: float
    pids: int


def parse_stat(text: str) -> tuple[int, int, int]:
    """``(ppid, utime, stime)`` in clock ticks from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may hold spaces and parentheses itself,
    so the fields are counted from the *last* ``)``.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime field 14, stime field 15.
    return int(rest[1]), int(rest[11]), int(rest[12])


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:  # the process ended between listing and reading
        return None


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (``root`` first)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        if text is None:
            continue
        try:
            ppid = parse_stat(text)[0]
        except (ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            tree.append(child)
            todo.append(child)
    return tree


def _sample(pids: Iterable[int]) -> TreeSample:
    ticks, pages, seen = 0, 0, 0
    for pid in pids:
        stat = _read(_PROC / str(pid) / "stat")
        statm = _read(_PROC / str(pid) / "statm")
        if stat is None or statm is None:
            continue
        _, utime, stime = parse_stat(stat)
        ticks += utime + stime
        pages += int(statm.split()[1])
        seen += 1
    return TreeSample(cpu_s=ticks / _TICKS, rss_mib=pages * _PAGE / _MIB, pids=seen)


def sample_tree(root: int) -> TreeSample:
    """CPU and RSS of ``root``'s process tree now. Blocking (a few small file reads)."""
    return _sample(process_tree(root))


def parse_proc_stat(text: str) -> float:
    """Busy CPU seconds of the whole machine from the text of ``/proc/stat``: user, nice,
    system, irq, softirq and steal of the ``cpu`` line (idle and iowait left out)."""
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("no aggregate cpu line in /proc/stat")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def machine_busy_s() -> float:
    """Busy CPU seconds of every CPU so far. Blocking (one small file read)."""
    return parse_proc_stat((_PROC / "stat").read_text())
