"""The ranks of a data-parallel run: DistributedDataParallel under torchrun (``launcher.py``).

Every rank shuffles with the same seed and takes a disjoint shard of each global batch (see
``loader.Batches``), DDP averages the gradients and metrics are all-reduced, so every rank
holds the same weights and history. Only the writer writes: local rank 0 of the node that runs
``dvc repro`` (a c10d rendezvous does not promise which node gets global rank 0). The other
nodes run the same script with ``--worker`` and write nothing.

A rank that dies is restarted by torch elastic, up to ``max_restarts`` times per node: every
rank on every node starts again, the rendezvous forms again, and every rank takes the writer's
resume state from the writer (``share``). Why a rank failed goes to torch elastic's error file
(``recorded``), where the launcher reads it; a rank's own error (a UserError) is not retried.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import traceback
from pathlib import Path

from . import atomic
from .errors import UserError, first_line

ERROR_DIR_ENV = "MNIST_PIPELINE_RUN_ERRORS"  # the launcher's folder: STARTED and torchrun's why
WRITER_ENV = "MNIST_PIPELINE_WRITER_NODE"  # "1" on the node that runs dvc repro
STARTED = "started"  # in ERROR_DIR_ENV: training began at least once on this node


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_writer() -> bool:
    """True in the one process that writes outputs (always True outside torchrun)."""
    writer_node = os.environ.get(WRITER_ENV) == "1"
    return not under_torchrun() or (writer_node and os.environ["LOCAL_RANK"] == "0")


def recorded(fn):
    """``fn`` under torch elastic's ``record``: an exception it raises is written, as JSON, to
    the error file torch elastic gives this rank (TORCHELASTIC_ERROR_FILE).

    Besides torch's own fields, ``extraInfo`` holds this rank's global ``rank``, the ``line``
    that says why, and ``own``: True for the rank's own error (a UserError or OSError: bad
    settings, a diverged loss, a full disk), which no restart fixes, so the launcher stops
    torchrun at once; False for a crash (a lost node, say), which torch elastic restarts.
    """
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, record

    class RankErrors(ErrorHandler):
        def record_exception(self, e: BaseException) -> None:
            path = self._get_error_file_path()
            if not path:
                return
            own = isinstance(e, (UserError, OSError))
            info = {
                "py_callstack": traceback.format_exc(),
                "timestamp": str(int(time.time())),
                "rank": int(os.environ.get("RANK", 0)),
                "own": own,
                "line": str(e) if own else _crash(e),
            }
            message = {"message": f"{type(e).__name__}: {e}", "extraInfo": info}
            atomic.write_text(path, json.dumps({"message": message}))  # read while we run

    return record(fn, error_handler=RankErrors())


def _crash(err: BaseException) -> str:
    """Why a rank failed other than by its own error, for the launcher's last line."""
    import torch.distributed as dist

    if isinstance(err, dist.DistError) or re.search(r"(closed|reset) by peer", str(err)):
        return "lost its connection to the other ranks (a node died or left)"
    return f"failed with {type(err).__name__}: {first_line(err, 120)}"


@contextlib.contextmanager
def process_group(device_spec: str, timeout: float):
    """In the process group for the block: (rank, world, device). gloo on CPU, nccl on CUDA.

    A rank waits ``timeout`` seconds (at least a minute) for the others in any collective:
    a node that went away mid-run, or a restarted one that never came, ends the wait. Its
    torch threads are the OMP_NUM_THREADS that ``launcher.launch`` set.
    """
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from .device import select_device

    device = select_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"device {device_spec!r}: distributed training runs on cpu or cuda only")
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=max(60, timeout))
    )
    try:
        yield int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), device
    finally:
        dist.destroy_process_group()


def agree(parts: dict[str, str], writer: bool) -> tuple[int, str]:
    """Check the ranks against each other; return the writer's global rank and, after a
    restart, ``restart k of M`` (k: the most restarts a node has spent, M: its allowance).

    Each node reads its own params.yaml, data/prepared and code: a node that differs in any
    part of the run's key (``resume.key_parts``) would train something else in lockstep, or
    hang when the batch counts differ. Exactly one rank is the writer, whatever global rank
    the rendezvous gave it.
    """
    import torch.distributed as dist

    from .resume import PARTS

    restarts = tuple(
        int(os.environ.get(f"TORCHELASTIC_{key}", 0)) for key in ("RESTART_COUNT", "MAX_RESTARTS")
    )
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, (parts, writer, restarts))
    names = dict.fromkeys(name for p, _, _ in every for name in p)
    differ = [name for name in names if len({p.get(name) for p, _, _ in every}) > 1]
    if differ:
        what = "; ".join(f"{part} ({PARTS.get(part, part)})" for part in differ)
        raise UserError(f"distributed: the nodes disagree on {what}; give every node the same ones")
    writers = [rank for rank, (_, w, _) in enumerate(every) if w]
    if not writers:
        raise UserError("distributed: no node runs dvc repro: every node was started --worker")
    if len(writers) > 1:
        raise UserError(
            f"distributed: {len(writers)} nodes run the train stage as the writer; "
            "run dvc repro on one node and start the others with --worker"
        )
    if folder := os.environ.get(ERROR_DIR_ENV):
        Path(folder, STARTED).touch()
    count, allowed = max(r for _, _, r in every)
    return writers[0], f"restart {count} of {allowed}" if count else ""


def share(state, writer_rank: int):
    """The writer's ``state`` on every rank (any picklable object; None for no state)."""
    import torch.distributed as dist

    box = [state if dist.get_rank() == writer_rank else None]
    dist.broadcast_object_list(box, src=writer_rank)
    return box[0]


def wrapper(device):
    """A function wrapping a model in DDP on ``device``."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    def wrap(model):
        if not isinstance(model, torch.nn.Module):
            return model  # logistic_scratch: its hand-written SGD averages the gradients itself
        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    return wrap
