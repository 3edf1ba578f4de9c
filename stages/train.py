"""train: train one model of params.yaml; write its checkpoint and history, and log its time.

Outputs (each written atomically):
  models/<name>.pt               state_dict + resolved config + device, weights_only-loadable
  plots/history/<name>.tsv       per epoch: train_loss, val_loss, val_acc (deterministic);
                                 rewritten after every epoch, so it grows while the stage runs
and, outside DVC (wall-clock times differ on every run, so they are no DVC output or metric):
  logs/train/<name>.json         seconds in all and per epoch, the device, threads and ranks

After every epoch but the last the state needed to continue is saved to --state (kept by
neither git nor DVC); a rerun after an interruption resumes from it, and success removes it.
The run's whole life is the library's run.py.

With distributed.nnodes > 1, every other node runs the same training as a worker that writes
nothing:  python stages/train.py --worker --model <name>
"""

import argparse
import sys

from mnist_pipeline.errors import stage_main


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

    from mnist_pipeline.params import load_params
    from mnist_pipeline.run import Outputs, train_run

    params = load_params(args.params)
    outputs = None if args.worker else Outputs(args.out, args.history, args.timing, args.state)
    train_run(
        params,
        args.model,
        args.prepared,
        outputs,
        script=__file__,
        argv=sys.argv[1:],
        nnodes=args.nnodes,
        rdzv_endpoint=args.rdzv_endpoint,
    )


if __name__ == "__main__":
    main()
