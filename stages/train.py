"""train: train one model of params.yaml; write its checkpoint and history, and log its time.

Outputs (each written atomically):
  models/<name>.pt               state_dict + resolved config + device, weights_only-loadable
  plots/history/<name>.tsv       per epoch: train_loss, val_loss, val_acc (deterministic);
                                 rewritten after every epoch, so it grows while the stage runs
and, outside DVC (wall-clock times differ on every run, so they are no DVC output or metric):
  logs/train/<name>.json         seconds in all and per epoch, the device, threads and ranks

After every epoch the state needed to continue is saved to --state (kept by neither git nor
DVC); a rerun after an interruption resumes from it, and success removes it. Under torchrun
the writer reads it and hands it to every rank, at the start and at every elastic restart.

With distributed.nnodes > 1, every other node runs the same training as a worker that writes
nothing:  python stages/train.py --worker --model <name>
"""

import argparse
import sys

from mnist_pipeline.errors import UserError, stage_main


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--model", required=True, help="a model name under models: in params")
    parser.add_argument(
        "--prepared", default="data/prepared", help="prepared tensors (default: %(default)s)"
    )
    parser.add_argument("--out", help="checkpoint path, models/<name>.pt")
    parser.add_argument("--history", help="per-epoch history TSV")
    parser.add_argument("--timing", help="run log JSON (git-ignored, not a DVC output)")
    parser.add_argument("--state", help="resume state file, e.g. .resume/<name>.pt")
    parser.add_argument(
        "--worker", action="store_true", help="join a multi-node run as a worker; write nothing"
    )
    parser.add_argument("--nnodes", type=int, help="with --worker: overrides distributed.nnodes")
    parser.add_argument(
        "--rdzv-endpoint", help="with --worker: host:port, overrides distributed.rdzv_endpoint"
    )
    args = parser.parse_args()
    if not args.worker and not (args.out and args.history and args.timing):
        parser.error("--out, --history and --timing are required (except with --worker)")

    from mnist_pipeline import atomic, distributed, threads
    from mnist_pipeline.params import load_params

    atomic.check_outputs(args.out, args.history, args.timing)  # before training, not after
    params = load_params(args.params)
    config = params.model(args.model)
    dist_config = params.distributed
    if args.worker:
        dist_config = distributed.worker_config(
            dist_config, args.nnodes, args.rdzv_endpoint, args.params
        )
    if distributed.under_torchrun():
        try:
            ranks = distributed.setup(config.device, dist_config.timeout)
            run(args, params, config, *ranks)
        except (UserError, OSError) as err:
            distributed.record_rank_error(str(err))
            raise
        except Exception as err:  # a lost node, say: torch elastic restarts this rank
            distributed.record_rank_crash(err)
            raise
        finally:
            distributed.teardown()
    elif dist_config.nproc > 1 or dist_config.nnodes > 1:
        run_id = f"mnist-pipeline-{args.model}"
        per_rank = threads.per_process(params.threads, dist_config.nproc)
        threads.check(per_rank * dist_config.nproc)
        distributed.launch(
            dist_config, run_id, __file__, sys.argv[1:], threads=per_rank, writer=not args.worker
        )
    else:
        from mnist_pipeline.device import select_device

        threads.check(threads.use(params.threads))  # before training and the resume key
        run(args, params, config, 0, 1, select_device(config.device))


def run(args, params, config, rank, world, device) -> None:
    from pathlib import Path

    import torch

    from mnist_pipeline import atomic, distributed
    from mnist_pipeline.data import load_datasets
    from mnist_pipeline.history import write_history
    from mnist_pipeline.resume import ResumeState, key_parts, state_key
    from mnist_pipeline.train import train_model

    writer = distributed.is_writer() and not args.worker
    train_ds, valid_ds = load_datasets(args.prepared, splits=("train", "valid"))
    # Only the writer keeps a state file; under torchrun every rank gets its state from it.
    resumable = writer and params.resume and args.state
    resume, restart = None, ""
    if resumable or world > 1:  # what decides the bytes: code, settings, data, threads, world
        data = [Path(args.prepared, f"{split}.pt") for split in ("train", "valid")]
        parts = key_parts(config.to_dict(), data, __file__, world)
        if world > 1:
            writer_rank, restart = distributed.agree(parts, writer)
        if resumable:
            resume = ResumeState(args.state, state_key(parts))

    def after_epoch(state: dict) -> None:
        """The writer, after each epoch: the resume state, then the history so far."""
        if resume:
            resume.save(state)
        write_history(args.history, state["history"])  # grows while the stage runs

    state = resume.load(config.epochs, restart=restart) if resume else None
    if restart and writer and not resume:
        print(f"train: {restart}: starting from epoch 0 (resume is off)", flush=True)
    if world > 1:  # one state for the whole run: the writer's, whichever node went down
        state = distributed.share(state, writer_rank)
    if state and writer:  # the history of a resumed run starts from the epochs already done
        write_history(args.history, state["history"])
    model, history = train_model(
        config,
        train_ds,
        valid_ds,
        device,
        rank=rank,
        world=world,
        wrap=distributed.wrapper(device) if world > 1 else None,
        lead=writer,
        state=state,
        on_epoch=after_epoch if writer else None,
    )
    if not writer:
        return
    from mnist_pipeline.checkpoints import checkpoint

    seconds = [row["seconds"] for row in history]
    atomic.torch_save(checkpoint(model, config, device), args.out)
    write_history(args.history, history)
    atomic.write_json(
        args.timing,
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
    print(f"train: {args.out} on {device} in {sum(seconds):.1f}s{by}")


if __name__ == "__main__":
    main()
