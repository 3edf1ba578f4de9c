"""A train stage's run, its whole life: where it trains, resume, agreement, outputs.

``train_run`` trains in this process, or launches torchrun (``launcher``) and waits, or, as one
of torchrun's ranks (``distributed``), trains its share. Each process that trains makes the
run's key (``resume.key_parts``), agrees on it with every other rank, takes the writer's resume
state (from ``--state``) and trains; the writer (``distributed.is_writer``) rewrites the history
after each epoch and saves the resume state after each but the last, then writes the
checkpoint, the history and the timing log, and clears the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import atomic, distributed, launcher, resume, threads
from .errors import UserError
from .params import Params


@dataclass(frozen=True)
class Outputs:
    """The writer's files, as dvc.yaml names them; a worker node has none."""

    model: str  # models/<name>.pt
    history: str  # plots/history/<name>.tsv, rewritten after every epoch
    timing: str  # logs/train/<name>.json, wall-clock times: git-ignored, no DVC output
    state: str | None = None  # .resume/<name>.pt, the resume state; None: no resume


def train_run(
    params: Params,
    name: str,
    prepared: str,
    outputs: Outputs | None,
    *,
    script: str,
    argv: list[str],
    nnodes: int | None = None,
    rdzv_endpoint: str | None = None,
) -> None:
    """Train model ``name`` of ``params`` on ``prepared`` and write ``outputs`` (None: a worker
    node, with ``--nnodes`` and ``--rdzv-endpoint`` as given). Under torchrun the stage runs
    again as ``script argv``."""
    if outputs:
        written = (outputs.model, outputs.history, outputs.timing)
        for path in written:  # before training
            atomic.check_output(path)
        if outputs.state and Path(outputs.state).resolve() in {Path(p).resolve() for p in written}:
            raise UserError(
                f"--state {outputs.state}: also an output; a finished run removes its state, "
                "so give it its own file"
            )
    config, nodes = params.model(name), params.distributed
    if outputs is None:
        nodes = launcher.worker_config(nodes, nnodes, rdzv_endpoint, params.path)
    # The key's data is hashed early, beside torch's import, wherever a key will be made.
    if distributed.under_torchrun():
        resume.hash_data_early(resume.data_files(prepared))
        distributed.recorded(_rank)(params, config, prepared, outputs, script, nodes)
    elif nodes.nproc > 1 or nodes.nnodes > 1:
        per_rank = threads.per_process(params.threads, nodes.nproc)  # the one place it is set
        threads.check(per_rank * nodes.nproc)
        run_id = f"mnist-pipeline-{name}"
        launcher.launch(nodes, run_id, script, argv, threads=per_rank, writer=bool(outputs))
    else:
        if params.resume and outputs and outputs.state:
            resume.hash_data_early(resume.data_files(prepared))
        from .device import select_device

        threads.check(threads.use(params.threads))  # before training and the resume key
        _train(params, config, prepared, outputs, script, nodes, 0, 1, select_device(config.device))


def _rank(params, config, prepared, outputs, script, nodes) -> None:
    with distributed.process_group(config.device, nodes.timeout) as (rank, world, device):
        _train(params, config, prepared, outputs, script, nodes, rank, world, device)


def _train(params, config, prepared, outputs, script, nodes, rank, world, device) -> None:
    import torch

    from .data import load_datasets
    from .history import write_history
    from .resume import ResumeState, data_files, key_parts, state_key
    from .train import train_model

    writer = bool(outputs) and distributed.is_writer()
    train_ds, valid_ds = load_datasets(prepared, splits=("train", "valid"))
    # Only the writer keeps a state file; under torchrun every rank gets its state from it.
    resumable = writer and params.resume and outputs.state
    resume, restart, writer_rank = None, "", rank
    if resumable or world > 1:
        data = data_files(prepared)
        # The world size this node's settings ask for (a worker's --nnodes too), which a run
        # that forms anyway would not show: its WORLD_SIZE is the rendezvous's, on every node.
        parts = key_parts(config.to_dict(), data, script, nodes.nnodes * nodes.nproc)
        if world > 1:
            writer_rank, restart = distributed.agree(parts, writer)
        if resumable:
            resume = ResumeState(outputs.state, state_key(parts))
    state = resume.load(config.epochs, restart=restart) if resume else None
    if restart and writer and not resume:
        print(f"train: {restart}: starting from epoch 0 (resume is off)", flush=True)
    if world > 1:  # one state for the whole run: the writer's, whichever node went down
        state = distributed.share(state, writer_rank)
    if state and writer:  # the history of a resumed run starts from the epochs already done
        write_history(outputs.history, state["history"])

    def after_epoch(snapshot: dict) -> None:  # the writer's, after each epoch
        if resume and len(snapshot["history"]) < config.epochs:  # the last: cleared at once
            resume.save(snapshot)
        write_history(outputs.history, snapshot["history"])  # grows while the stage runs

    model, history = train_model(
        config,
        train_ds,
        valid_ds,
        device,
        rank=rank,
        world=world,
        wrap=distributed.wrapper(device) if world > 1 else None,
        writer=writer,
        state=state,
        on_epoch=after_epoch if writer else None,
    )
    if not writer:
        return
    from .checkpoints import checkpoint

    seconds = [row["seconds"] for row in history]
    atomic.torch_save(checkpoint(model, config, device), outputs.model)  # history: after_epoch's
    atomic.write_json(
        outputs.timing,
        {
            "device": str(device),
            "ranks": world,
            "threads": torch.get_num_threads(),
            "train_seconds": round(sum(seconds), 3),
            "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        },
    )
    if resume:
        resume.clear()
    by = f", written by rank {rank} of {world}" if world > 1 else ""
    print(f"train: {outputs.model} on {device} in {sum(seconds):.1f}s{by}")
