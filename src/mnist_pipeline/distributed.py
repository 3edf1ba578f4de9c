"""Data-parallel training with DistributedDataParallel, launched by torchrun.

A train stage with ``distributed.nproc > 1`` re-launches itself as
``torchrun --standalone --nproc_per_node=N``. Every rank shuffles with the same seed and
takes a disjoint shard of each global batch (see ``train.Batches``), DDP averages the
gradients, metrics are all-reduced, and only rank 0 writes outputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import UserError

ERROR_DIR_ENV = "MNIST_PIPELINE_RANK_ERRORS"


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(nproc: int, script: str, argv: list[str]) -> None:
    """Run ``script argv`` under torchrun; on failure raise the failing rank's own error."""
    with tempfile.TemporaryDirectory(prefix="mnist-ddp-") as errors:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={nproc}", script, *argv]
        env = {**os.environ, ERROR_DIR_ENV: errors, "OMP_NUM_THREADS": str(_threads(nproc))}
        result = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
        if result.returncode == 0:
            return
        reports = sorted(Path(errors).glob("rank*.txt"))
        if reports:
            rank = reports[0].stem.removeprefix("rank")
            raise UserError(f"rank {rank} failed: {reports[0].read_text().strip()}")
        sys.stderr.write(result.stderr)
        raise UserError(f"torchrun exited with status {result.returncode}; see the log above")


def _threads(nproc: int) -> int:
    return max(1, (os.cpu_count() or 1) // nproc)


def record_rank_error(message: str) -> None:
    """Leave this rank's one-line error where the launching process will find it."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder:
        Path(folder, f"rank{os.environ.get('RANK', '0')}.txt").write_text(message + "\n")


def setup(device_spec: str):
    """Join the process group; return (rank, world, device). gloo on CPU, nccl on CUDA."""
    import torch
    import torch.distributed as dist

    from .train import select_device

    device = select_device(device_spec)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"device {device_spec!r}: distributed training runs on cpu or cuda only")
    torch.set_num_threads(_threads(int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def wrapper(device):
    """A function wrapping a model in DDP on ``device``."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    def wrap(model):
        if not isinstance(model, torch.nn.Module):
            return model  # logistic_scratch: its hand-written SGD averages the gradients itself
        if device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[device.index])
        return DistributedDataParallel(model)

    return wrap


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
