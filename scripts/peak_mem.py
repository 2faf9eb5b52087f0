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


def tree_pss_bytes(root: int) -> tuple[int, int]:
    """(PSS of ``root`` and all its descendants in bytes, number of processes)."""
    tree, todo, seen = _children(), [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(tree.get(pid, []))
    return sum(_pss_kb(p) for p in seen) * 1024, len(seen)


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, start_new_session=True)
    peak, procs = 0, 0
    while proc.poll() is None:
        pss, n = tree_pss_bytes(proc.pid)
        if pss > peak:
            peak, procs = pss, n
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    print(
        f"peak_mem: exit {proc.returncode}, wall {wall:.0f} s ({wall / 60:.1f} min), peak PSS of the process "
        f"tree {peak / 2**30:.2f} GiB ({procs} processes at the peak)",
        file=sys.stderr,
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
