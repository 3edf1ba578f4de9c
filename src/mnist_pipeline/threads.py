"""Torch's CPU threads: a setting of params.yaml (``threads``), and a check for shared cores.

On the CPU the thread count decides how torch splits its sums, so it decides a model's bytes:
it is a param that DVC records, not a property of the machine. ``threads: 0`` means one per
core (or $OMP_NUM_THREADS) for a single-process stage, and cores / nproc per rank under
torchrun; either depends on the machine.

Two stages on the same cores (``dvc queue start -j 2``) each want their threads, and torch's
threads spin while they wait for each other: past the core count a stage runs many times
slower, and ``check`` says so in one line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import UserError

STAGE_SCRIPTS = (b"stages/train.py", b"stages/evaluate.py")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# Past the cores torch's threads spin while they wait for each other: a little past them a run
# is slower (a warning, see ``check``), far past them it crawls (a logistic epoch took 130 s
# at threads 1000 on 2 cores, against 0.3 s). Refused above this many times the cores; not at
# the cores, so that the shipped models (threads 2) can still be made on a 1-core machine.
OVER_CORES = 4


def checked(threads: int) -> int:
    """``threads``, refused in one line past OVER_CORES times the cores of this machine."""
    if threads > OVER_CORES * cores():
        raise UserError(
            f"params.yaml: threads: {threads} is over {OVER_CORES}x the {cores()} cores here; "
            "torch's threads would spin waiting for each other and train many times slower: "
            f"use at most {cores()} (0: one per core)"
        )
    return threads


def per_process(threads: int, nproc: int) -> int:
    """Torch threads for each of ``nproc`` ranks: ``threads`` (0: the cores) shared among them."""
    return max(1, (checked(threads) or cores()) // nproc)


def use(threads: int) -> int:
    """Set torch's intra-op thread count (0: keep its default); return the count in use."""
    import torch

    if checked(threads):
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def running_stages() -> set[int]:
    """The pids of the train and evaluate stages running here, this one included: a process
    whose command line names a stage script, unless its parent does too (torchrun and its
    ranks belong to the stage that launched them). Empty where there is no /proc."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if any(s in (entry / "cmdline").read_bytes() for s in STAGE_SCRIPTS):
                stat = (entry / "stat").read_text()  # pid (comm) state ppid ...
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # it ended meanwhile, or is not ours to read
            continue
    return {pid for pid, parent in parents.items() if parent not in parents}


def check(threads: int) -> None:
    """Print one line if the train and evaluate stages running here (from /proc, so on Linux),
    each with ``threads`` torch threads (this stage's count), want more than there are cores."""
    stages = max(1, len(running_stages()))
    if stages * threads <= cores():
        return
    who = f"{stages} running stages use" if stages > 1 else "this stage uses"
    print(
        f"warning: oversubscribed: {who} {stages * threads} torch threads on {cores()} cores "
        "and will run slower; give each job threads <= cores / jobs "
        "(-S threads=N, docs/scaling.md)",
        file=sys.stderr,
        flush=True,
    )
