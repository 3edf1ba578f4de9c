"""Torch's CPU threads: a setting of params.yaml (``threads``), and a check for shared cores.

On the CPU the thread count decides how torch splits its sums, so it decides a model's bytes:
it is a param that DVC records, not a property of the machine. ``threads: 0`` keeps torch's
default, one per core (or $OMP_NUM_THREADS), which then depends on the machine.

Two stages on the same cores (``dvc queue start -j 2``) each want their threads, and torch's
threads spin while they wait for each other: past the core count a stage runs many times
slower. Each train and evaluate stage records its threads in a folder of the temporary
directory, one file per process, and one that finds the stages running here want more threads
than there are cores says so in one line.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError

RUNNING_ENV = "MNIST_PIPELINE_RUNNING_DIR"  # where the running stages are recorded


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


# Past the cores torch's threads spin while they wait for each other: a little past them a run
# is slower (a warning, see ``register``), far past them it crawls (a logistic epoch took 130 s
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
    """Torch threads for each of a machine's ``nproc`` ranks: ``threads`` shared among them, or
    with ``threads`` 0 the cores."""
    return max(1, (checked(threads) or cores()) // nproc)


def use(threads: int) -> int:
    """Set torch's intra-op thread count (0: keep its default); return the count in use."""
    import torch

    if checked(threads):
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def running_dir() -> Path:
    default = Path(tempfile.gettempdir(), f"mnist-pipeline-running-{os.getuid()}")
    return Path(os.environ.get(RUNNING_ENV) or default)


def _started(pid: int) -> str:
    import psutil

    return f"{psutil.Process(pid).create_time():.2f}"


def _running(folder: Path) -> list[int]:
    """The threads of each live process recorded in ``folder``; a dead one's record goes."""
    import psutil

    found = []
    for entry in folder.iterdir():
        try:
            count, started = entry.read_text().split()
            count = int(count)
            alive = _started(int(entry.name)) == started  # not a pid reused since
        except psutil.NoSuchProcess:
            alive = False
        except (ValueError, OSError, psutil.Error):  # being written, or not ours: skip it
            continue
        if alive:
            found.append(count)
        else:
            entry.unlink(missing_ok=True)
    return found


def register(threads: int, folder: Path | None = None) -> Callable[[], None]:
    """Record that this process computes with ``threads`` threads, until the returned function
    or the process's exit removes the record. Print one line if the stages running here (this
    one included) want more threads than there are cores."""
    folder = folder or running_dir()
    me = folder / str(os.getpid())

    def remove() -> None:
        me.unlink(missing_ok=True)
        atexit.unregister(remove)

    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        me.write_text(f"{threads} {_started(os.getpid())}\n")
        atexit.register(remove)
        running = _running(folder)
    except OSError:  # no writable temporary folder: no check, the run goes on
        return remove
    total, n = sum(running), len(running)
    if total > cores():
        stages = f"{n} running stages use" if n > 1 else "this stage uses"
        print(
            f"warning: oversubscribed: {stages} {total} torch threads on {cores()} cores "
            "and will run slower; give each job threads <= cores / jobs "
            "(-S threads=N, docs/scaling.md)",
            file=sys.stderr,
            flush=True,
        )
    return remove


@contextlib.contextmanager
def registered(threads: int, folder: Path | None = None) -> Iterator[None]:
    """``register`` for the duration of a block."""
    remove = register(threads, folder)
    try:
        yield
    finally:
        remove()
