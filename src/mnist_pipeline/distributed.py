"""Data-parallel training with DistributedDataParallel, launched by torchrun.

A train stage with ``distributed.nproc > 1`` or ``nnodes > 1`` re-launches itself under
torchrun: ``--standalone`` on one machine, a c10d rendezvous at ``rdzv_endpoint`` across
several. Every rank shuffles with the same seed and takes a disjoint shard of each global batch
(see ``loader.Batches``), DDP averages the gradients and metrics are all-reduced, so every rank
holds the same weights and history. Only the writer writes: local rank 0 of the node that runs
``dvc repro`` (a c10d rendezvous does not promise which node gets global rank 0). The other
nodes run the same script with ``--worker`` and write nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .params import DistributedConfig
from .threads import per_process

ERROR_DIR_ENV = "MNIST_PIPELINE_RANK_ERRORS"
WRITER_ENV = "MNIST_PIPELINE_WRITER_NODE"


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_writer() -> bool:
    """True in the one process that writes outputs (always True outside torchrun)."""
    if not under_torchrun():
        return True
    return os.environ.get(WRITER_ENV) == "1" and os.environ["LOCAL_RANK"] == "0"


def torchrun_args(config: DistributedConfig, run_id: str) -> list[str]:
    """torchrun's options for one node of ``config``."""
    if config.nnodes == 1:
        return ["--standalone", f"--nproc_per_node={config.nproc}"]
    return [
        f"--nnodes={config.nnodes}",
        f"--nproc_per_node={config.nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={config.rdzv_endpoint}",
        f"--rdzv_id={run_id}",
        f"--rdzv_conf=join_timeout={config.timeout:g}",
        "--max_restarts=0",
    ]


def launch(
    config: DistributedConfig,
    run_id: str,
    script: str,
    argv: list[str],
    *,
    threads: int = 0,
    writer: bool = True,
) -> None:
    """Run ``script argv`` under torchrun; on failure raise the failing rank's own error.

    ``threads`` (params.yaml's, for the whole stage) is shared among the node's ranks.
    """
    with tempfile.TemporaryDirectory(prefix="mnist-ddp-") as errors:
        cmd = [sys.executable, "-m", "torch.distributed.run", *torchrun_args(config, run_id)]
        cmd += [script, *argv]
        env = {
            **os.environ,
            ERROR_DIR_ENV: errors,
            WRITER_ENV: "1" if writer else "0",
            "OMP_NUM_THREADS": str(per_process(threads, config.nproc)),
        }
        result = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
        if result.returncode == 0:
            return
        reports = sorted(Path(errors).glob("rank*.txt"), key=lambda p: int(p.stem[4:]))
        if reports:
            rank = reports[0].stem.removeprefix("rank")
            raise UserError(f"rank {rank} failed: {reports[0].read_text().strip()}")
        if "RendezvousTimeoutError" in result.stderr:
            raise UserError(
                f"distributed: not all {config.nnodes} nodes joined the rendezvous at "
                f"{config.rdzv_endpoint} within {config.timeout:g}s (distributed.timeout); "
                "start the other nodes with: python stages/train.py --worker --model ..."
            )
        sys.stderr.write(result.stderr)
        raise UserError(f"torchrun exited with status {result.returncode}; see the log above")


def record_rank_error(message: str) -> None:
    """Leave this rank's one-line error where the launching process will find it."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder:
        Path(folder, f"rank{os.environ.get('RANK', '0')}.txt").write_text(message + "\n")


def setup(device_spec: str, threads: int = 0):
    """Join the process group; return (rank, world, device). gloo on CPU, nccl on CUDA.

    The node's ranks share params.yaml's ``threads``: ``threads // nproc`` torch threads each.
    """
    import torch
    import torch.distributed as dist

    from .device import select_device

    device = select_device(device_spec)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"device {device_spec!r}: distributed training runs on cpu or cuda only")
    torch.set_num_threads(per_process(threads, int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def check_same(digest: str) -> None:
    """Fail in one line unless every rank trains the same settings, data and code.

    Each node reads its own params.yaml and data/prepared: a node that differs would train
    something else in lockstep, or hang when the batch counts differ.
    """
    import torch.distributed as dist

    digests = [None] * dist.get_world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise UserError(
            "distributed: the nodes disagree on the model's settings, data or code "
            "(params.yaml, data/prepared or src/ differ); give every node the same ones"
        )


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
