"""Run a command; report its wall time and the peak memory of its whole process tree.

    python scripts/peak_mem.py -- make demo

Memory is the sum of PSS (proportional set size, /proc/PID/smaps_rollup) over the command and every
descendant, sampled every 0.5 s: Ray's raylet, GCS, dashboard, Train workers and DataLoader workers all
descend from the driver, and PSS counts pages shared between them (torch libraries, the object store)
once in total rather than once per process, as summing RSS would. Linux only; no dependencies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(name))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:90]
    except OSError:
        return "?"


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, now (also used by ``scripts/cpu_by_process.py``)."""
    tree, todo, seen = _children(), [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(tree.get(pid, []))
    return seen


def tree_pss(root: int) -> list[tuple[int, int]]:
    """``(pid, PSS bytes)`` of ``root`` and all its descendants."""
    return [(p, _pss_kb(p) * 1024) for p in descendants(root)]


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, start_new_session=True)
    peak, at_peak = 0, []
    while proc.poll() is None:
        rows = tree_pss(proc.pid)
        total = sum(b for _, b in rows)
        if total > peak:
            peak, at_peak = total, [(b, _name(p)) for p, b in rows]
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    print(
        f"peak_mem: exit {proc.returncode}, wall {wall:.0f} s ({wall / 60:.1f} min), peak PSS of the process "
        f"tree {peak / 2**30:.2f} GiB ({len(at_peak)} processes at the peak; largest:)",
        file=sys.stderr,
    )
    for b, name in sorted(at_peak, reverse=True)[:12]:
        print(f"  {b / 2**20:7.0f} MiB  {name}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
