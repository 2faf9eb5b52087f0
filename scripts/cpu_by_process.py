"""Where a command's CPU time goes, by process: run it, sample its whole process tree, print a table.

    python scripts/cpu_by_process.py [--top N] -- python sweeps/loss_weights.py --config sweep.yaml ...

Made to answer "why does a two-trial sweep of a few seconds of training take minutes on 2 cores": an
embedded Ray cluster, its dashboard and each trial's Tune actor, TrainController, placement-group
cleaner, dataset manager and Train workers are separate Python processes, each starting Python and
importing Ray (and most of them torch). Every process below the command (``ray.init``'s GCS, raylet
and workers included) is read from ``/proc`` every 0.2 s; a process is named by its title (Ray's
``ray::TrainController``) or its program. Linux only; the sampling itself costs well under 1% of a core.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from peak_mem import descendants  # scripts/ is sys.path[0] when run as a script

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _title(pid: int) -> str | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):  # Ray's process title: ray::<Actor> or ray::<Actor>.<method>
        return first.split()[0].split(".")[0]
    if first.startswith("ray-dashboard-"):
        return first.split()[0]
    words = [w.decode(errors="replace") for w in argv if w]
    script = next((w for w in words[1:] if w.endswith(".py") or w in ("-c", "-m")), "")
    return " ".join(filter(None, (Path(first).name, Path(script).name if script.endswith(".py") else script)))


def _rank(name: str) -> int:
    """Which of two names seen for one process to keep: an actor's title (the first one) over the Ray
    worker it started as, over a program (the latest: a fork shows its parent's until it execs), over the
    empty command line of a process that is exiting."""
    if name.startswith("ray::") and not name.startswith("ray::IDLE"):
        return 3
    return 2 if name.startswith("ray::") else int(bool(name))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=25, help="rows to print (the rest are summed in one)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to measure after --")
    cpu: dict[int, float] = {}
    title: dict[int, str] = {}
    start = time.monotonic()
    proc = subprocess.Popen(command)
    while proc.poll() is None:
        for pid in descendants(proc.pid):
            seconds = _cpu_seconds(pid)
            name = _title(pid)
            if seconds is None or name is None:
                continue
            rank, known = _rank(name), _rank(title.get(pid, ""))
            if rank > known or 0 < rank == known < 3:  # the first actor a worker became, the last exec
                title[pid] = name
            if pid in title:  # one seen only as it exits (empty command line) has no name to count under
                cpu[pid] = max(cpu.get(pid, 0.0), seconds)
        time.sleep(0.2)
    wall = time.monotonic() - start
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for pid, seconds in cpu.items():
        by_name[title[pid]].append(seconds)
    rows = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))
    total = sum(cpu.values())
    print(f"\n{'CPU s':>8} {'procs':>5}  process (exit code {proc.returncode}, {wall:.0f} s wall)", file=sys.stderr)
    for name, times in rows[: args.top]:
        print(f"{sum(times):8.1f} {len(times):5d}  {name}", file=sys.stderr)
    rest = rows[args.top :]
    if rest:
        print(f"{sum(sum(t) for _, t in rest):8.1f} {sum(len(t) for _, t in rest):5d}  (the other {len(rest)})",
              file=sys.stderr)  # fmt: skip
    print(f"{total:8.1f} {len(cpu):5d}  in all: {total / wall:.2f} cores busy on average", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
