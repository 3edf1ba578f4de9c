"""train: train one model of params.yaml; write its checkpoint, history and timing.

Outputs (each written atomically):
  models/<name>.pt               state_dict + resolved config + device, weights_only-loadable
  plots/history/<name>.tsv       per epoch: train_loss, val_loss, val_acc (deterministic)
  metrics/train/<name>.json      wall-clock seconds per epoch and the device (not deterministic)
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
    parser.add_argument("--prepared", required=True, help="folder of the prepared tensors")
    parser.add_argument("--out", required=True, help="checkpoint path, models/<name>.pt")
    parser.add_argument("--history", required=True, help="per-epoch history TSV")
    parser.add_argument("--timing", required=True, help="timing JSON")
    args = parser.parse_args()

    from mnist_pipeline import distributed
    from mnist_pipeline.params import load_params

    config = load_params(args.params).model(args.model)
    if config.nproc > 1 and not distributed.under_torchrun():
        distributed.launch(config.nproc, __file__, sys.argv[1:])
        return
    if distributed.under_torchrun():
        try:
            run(args, config, *distributed.setup(config.device))
        except (UserError, OSError) as err:
            distributed.record_rank_error(str(err))
            raise
        finally:
            distributed.teardown()
    else:
        from mnist_pipeline.train import select_device

        run(args, config, 0, 1, select_device(config.device))


def run(args, config, rank, world, device) -> None:
    from mnist_pipeline import atomic, distributed
    from mnist_pipeline.data import load_datasets
    from mnist_pipeline.history import write_history
    from mnist_pipeline.train import checkpoint, train_model

    train_ds, valid_ds = load_datasets(args.prepared, splits=("train", "valid"))
    wrap = distributed.wrapper(device) if world > 1 else None
    model, history = train_model(
        config, train_ds, valid_ds, device, rank=rank, world=world, wrap=wrap
    )
    if rank != 0:
        return
    seconds = [row["seconds"] for row in history]
    atomic.torch_save(checkpoint(model, config, device), args.out)
    write_history(args.history, history)
    atomic.write_json(
        args.timing,
        {
            "device": str(device),
            "nproc": world,
            "train_seconds": round(sum(seconds), 3),
            "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        },
    )
    print(f"train: {args.out} on {device} in {sum(seconds):.1f}s")


if __name__ == "__main__":
    main()
