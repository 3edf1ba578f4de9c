"""Data-parallel training with DistributedDataParallel, launched by torchrun.

A train stage with ``distributed.nproc > 1`` or ``nnodes > 1`` re-launches itself under
torchrun: ``--standalone`` on one machine, a c10d rendezvous at ``rdzv_endpoint`` across
several. Every rank shuffles with the same seed and takes a disjoint shard of each global batch
(see ``loader.Batches``), DDP averages the gradients and metrics are all-reduced, so every rank
holds the same weights and history. Only the writer writes: local rank 0 of the node that runs
``dvc repro`` (a c10d rendezvous does not promise which node gets global rank 0). The other
nodes run the same script with ``--worker`` and write nothing.

A rank that dies is restarted by torch elastic, up to ``max_restarts`` times per node: every
rank on every node starts again, the rendezvous forms again, and every rank takes the writer's
resume state from the writer (``share``). A rank's own error (a UserError) is not retried: the
launcher stops torchrun at once and reports it.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import UserError, first_line
from .params import DistributedConfig

ERROR_DIR_ENV = "MNIST_PIPELINE_RANK_ERRORS"
WRITER_ENV = "MNIST_PIPELINE_WRITER_NODE"
STARTED = "started"  # in ERROR_DIR_ENV: training began at least once on this node


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_writer() -> bool:
    """True in the one process that writes outputs (always True outside torchrun)."""
    if not under_torchrun():
        return True
    return os.environ.get(WRITER_ENV) == "1" and os.environ["LOCAL_RANK"] == "0"


def worker_config(
    config: DistributedConfig, nnodes: int | None, endpoint: str | None, params: str
) -> DistributedConfig:
    """A worker node's ``config``: params.yaml's (``params``), with ``--nnodes`` and
    ``--rdzv-endpoint`` where given; each refused in one line unless it makes a multi-node run."""
    from dataclasses import replace

    from .params import ENDPOINT, _endpoint

    if nnodes is not None:
        if nnodes < 2:
            raise UserError(f"--nnodes {nnodes}: a worker joins a run of at least 2 nodes")
        config = replace(config, nnodes=nnodes)
    if endpoint is not None:
        if not (endpoint and _endpoint(endpoint)):
            raise UserError(
                f"--rdzv-endpoint: expected {ENDPOINT.split(' (')[0]}, got {endpoint!r}"
            )
        config = replace(config, rdzv_endpoint=endpoint)
    if config.nnodes == 1:
        raise UserError(f"{params}: distributed.nnodes is 1; --worker needs nnodes > 1")
    return config


def torchrun_args(config: DistributedConfig, run_id: str, *, writer: bool = True) -> list[str]:
    """torchrun's options for one node of ``config``.

    Across machines the writer's node hosts the rendezvous (``rdzv_endpoint`` is its
    host:port), also when every node runs on one host; a worker waits up to ``timeout`` for it.
    """
    restarts = f"--max_restarts={config.max_restarts}"
    if config.nnodes == 1:
        return ["--standalone", f"--nproc_per_node={config.nproc}", restarts]
    conf = {
        "join_timeout": f"{config.timeout:g}",
        "read_timeout": max(60, math.ceil(config.timeout)),  # a worker waiting for the host
        "is_host": int(writer),
    }
    return [
        f"--nnodes={config.nnodes}",
        f"--nproc_per_node={config.nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={config.rdzv_endpoint}",
        f"--rdzv_id={run_id}",
        "--rdzv_conf=" + ",".join(f"{k}={v}" for k, v in conf.items()),
        restarts,
    ]


def launch(
    config: DistributedConfig,
    run_id: str,
    script: str,
    argv: list[str],
    *,
    threads: int,
    writer: bool = True,
) -> None:
    """Run ``script argv`` under torchrun; on failure raise one line that says why.

    Each rank computes with ``threads`` torch threads (``threads.per_process``): torch reads
    them from OMP_NUM_THREADS.
    """
    with tempfile.TemporaryDirectory(prefix="mnist-ddp-") as folder:
        errors = Path(folder)
        cmd = [sys.executable, "-m", "torch.distributed.run"]
        cmd += [*torchrun_args(config, run_id, writer=writer), script, *argv]
        env = {
            **os.environ,
            ERROR_DIR_ENV: folder,
            WRITER_ENV: "1" if writer else "0",
            "OMP_NUM_THREADS": str(threads),
            # A fresh store for the ranks of every restart: the agents' shared one keeps the
            # keys of the ranks that died, and a restarted rank may connect to those
            # (pytorch/pytorch#135712: the restart counts that separate them differ per node).
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
        }
        with open(errors / "torchrun.log", "w+") as log:  # a file: nothing blocks on a pipe
            torchrun = subprocess.Popen(cmd, env=env, stderr=log)
            try:
                stopped = _wait(torchrun, errors)
            except BaseException:  # Ctrl-C: torchrun stops its ranks
                _stop(torchrun)
                raise
            if torchrun.returncode == 0 and not stopped:
                return
            log.seek(0)
            raise UserError(_why(config, errors, log.read(), torchrun.returncode, writer))


def _wait(torchrun: subprocess.Popen, errors: Path) -> bool:
    """Wait for torchrun to end; stop it when a rank reports its own error: no restart fixes
    that error (bad settings, a diverged loss, a full disk). True if stopped."""
    while True:
        try:
            torchrun.wait(timeout=0.1)
            return False
        except subprocess.TimeoutExpired:
            if _reports(errors, "rank"):
                _stop(torchrun)
                return True


def _stop(torchrun: subprocess.Popen) -> None:
    torchrun.terminate()  # torchrun stops its ranks, and leaves the rendezvous open
    try:
        torchrun.wait(timeout=60)
    except subprocess.TimeoutExpired:
        torchrun.kill()
        torchrun.wait()


def _reports(errors: Path, kind: str) -> list[Path]:
    """The ranks' reports of ``kind``, lowest global rank first."""
    found = errors.glob(f"{kind}*.txt")
    return sorted(found, key=lambda p: int(p.stem.removeprefix(kind)))


def _why(config: DistributedConfig, errors: Path, log: str, status: int, writer: bool) -> str:
    """One line for a failed torchrun, from the ranks' reports and torchrun's log."""
    if reports := _reports(errors, "rank"):
        rank = reports[0].stem.removeprefix("rank")
        return f"rank {rank} failed: {reports[0].read_text().strip()}"
    where, wait = config.rdzv_endpoint, f"{config.timeout:g}s (distributed.timeout)"
    if not writer:
        again = "start this worker again for the next run"
    else:
        every = " with every node started" if config.nnodes > 1 else ""
        again = f"rerun{every}: it resumes from the last completed epoch"
    started = (errors / STARTED).exists()
    if "RendezvousTimeoutError" in log and not started:
        return (
            f"distributed: not all {config.nnodes} nodes joined the rendezvous at {where} "
            f"within {wait}; start the other nodes with: "
            "python stages/train.py --worker --model ..."
        )
    if "RendezvousTimeoutError" in log:
        left = f"a node left and did not rejoin the rendezvous at {where} within {wait}"
        return f"distributed: {left}; {again}"
    if "RendezvousClosedError" in log:
        return f"distributed: another node ended the run (see the error there); {again}"
    if "RendezvousConnectionError" in log and not writer:
        gone = f"lost the rendezvous at {where}: the node that runs dvc repro is gone"
        return f"distributed: {gone}; {again}"
    if "ChildFailedError" in log and started:
        spent = f"distributed.max_restarts ({config.max_restarts}) spent"
        return f"distributed: {_cause(errors, log)}, and {spent}; {again}"
    sys.stderr.write(log)
    return f"torchrun exited with status {status}; see the log above"


def _cause(errors: Path, log: str) -> str:
    """What ended the last attempt: the first failed rank's signal, its report or exit status."""
    root = log.split("Root Cause", 1)[-1]
    rank = re.search(r"rank\s*:\s*(\d+)", root)
    code = re.search(r"exitcode\s*:\s*(-?\d+)", root)
    if not (rank and code):
        return "a rank failed"
    rank, code = rank.group(1), int(code.group(1))
    if code < 0:
        try:
            return f"rank {rank} was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"rank {rank} was killed by signal {-code}"
    crash = errors / f"crash{rank}.txt"
    if crash.exists():
        return f"rank {rank} {crash.read_text().strip()}"
    return f"rank {rank} exited with status {code}"


def record_rank_error(message: str) -> None:
    """Leave this rank's one-line error where the launching process will find it: the
    launcher then stops torchrun, since a restart would only fail the same way."""
    _record("rank", message)


def record_rank_crash(err: BaseException) -> None:
    """Note why this rank failed otherwise (torch elastic restarts it): for the last line."""
    import torch.distributed as dist

    if isinstance(err, dist.DistError) or re.search(r"(closed|reset) by peer", str(err)):
        _record("crash", "lost its connection to the other ranks (a node died or left)")
    else:
        _record("crash", f"failed with {type(err).__name__}: {first_line(err, 120)}")


def _record(kind: str, message: str) -> None:
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder:
        Path(folder, f"{kind}{os.environ.get('RANK', '0')}.txt").write_text(message + "\n")


def setup(device_spec: str, timeout: float = 300):
    """Join the process group; return (rank, world, device). gloo on CPU, nccl on CUDA.

    A rank waits ``timeout`` seconds (at least a minute) for the others in any collective:
    a node that went away mid-run, or a restarted one that never came, ends the wait. Its
    torch threads are the OMP_NUM_THREADS that ``launch`` set.
    """
    from datetime import timedelta

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
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=max(60, timeout))
    )
    return rank, world, device


# What differs, when a part of the nodes' keys (resume.key_parts) does: where to look.
DIFFERS = {
    "code": "src/, stages/ or torch",
    "params": "the model's settings in params.yaml",
    "data": "data/prepared",
    "threads": "torch threads per rank: params.yaml threads, or the cores with threads 0",
    "world size": "the number of processes",
}


def agree(parts: dict[str, str], writer: bool) -> tuple[int, str]:
    """Check the ranks against each other; return the writer's global rank and, after a
    restart, ``restart k of M`` (k: the most restarts a node has spent, M: its allowance).

    Each node reads its own params.yaml, data/prepared and code: a node that differs in any
    part of the run's key (``resume.key_parts``) would train something else in lockstep, or
    hang when the batch counts differ. The refusal names the parts that differ. Exactly one
    rank is the writer, whatever global rank the rendezvous gave it.
    """
    import torch.distributed as dist

    restarts = tuple(
        int(os.environ.get(f"TORCHELASTIC_{key}", 0)) for key in ("RESTART_COUNT", "MAX_RESTARTS")
    )
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, (parts, writer, restarts))
    names = dict.fromkeys(name for p, _, _ in every for name in p)
    differ = [name for name in names if len({p.get(name) for p, _, _ in every}) > 1]
    if differ:
        what = "; ".join(f"{part} ({DIFFERS.get(part, part)})" for part in differ)
        raise UserError(f"distributed: the nodes disagree on {what}; give every node the same ones")
    writers = [rank for rank, (_, w, _) in enumerate(every) if w]
    if not writers:
        raise UserError("distributed: no node runs dvc repro: every node was started --worker")
    if len(writers) > 1:
        raise UserError(
            f"distributed: {len(writers)} nodes run the train stage as the writer; "
            "run dvc repro on one node and start the others with --worker"
        )
    folder = os.environ.get(ERROR_DIR_ENV)
    if folder:
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
        if device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[device.index])
        return DistributedDataParallel(model)

    return wrap


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
