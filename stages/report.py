"""report: the cross-model summary.

Outputs (each written atomically):
  metrics/summary.md    one row per model: val loss/accuracy, test accuracy, params, s/epoch, device
  plots/curves.png      train/val loss and val accuracy per epoch, every model
  plots/digits.png      a grid of validation digits with their labels (the tutorial's first picture)
"""

import argparse
import json
from pathlib import Path

from mnist_pipeline.errors import UserError, stage_main


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run dvc repro to produce it") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    parser.add_argument("--prepared", required=True, help="folder of the prepared tensors")
    parser.add_argument("--metrics-dir", default="metrics", help="(default: %(default)s)")
    parser.add_argument("--history-dir", default="plots/history", help="(default: %(default)s)")
    parser.add_argument("--summary", required=True, help="markdown table to write")
    parser.add_argument("--curves-png", required=True)
    parser.add_argument("--digits-png", required=True)
    args = parser.parse_args()

    from mnist_pipeline import atomic, plots
    from mnist_pipeline.history import read_history
    from mnist_pipeline.params import load_params
    from mnist_pipeline.summary import summary_table

    names = list(load_params(args.params).models)
    metrics_dir = Path(args.metrics_dir)
    rows = {
        name: read_json(metrics_dir / f"{name}.json")
        | read_json(metrics_dir / "train" / f"{name}.json")
        for name in names
    }
    atomic.write_text(args.summary, summary_table(rows))
    plots.curves_png(
        {n: read_history(Path(args.history_dir) / f"{n}.tsv") for n in names}, args.curves_png
    )

    from mnist_pipeline.data import load_split

    x, y = load_split(args.prepared, "valid")
    shown = range(min(32, len(y)))
    plots.digit_grid(
        [x[i].numpy() for i in shown],
        [f"label {int(y[i])}" for i in shown],
        args.digits_png,
        f"The first {len(shown)} validation digits with their labels",
    )
    print(f"report: {args.summary}, {args.curves_png}, {args.digits_png}")


if __name__ == "__main__":
    main()
