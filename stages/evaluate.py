"""evaluate: score every trained model on the validation and test splits, and the summary.

One process for all models: it pays `import torch` and matplotlib once, where a stage per
model paid them per model (see BENCHMARKS.md for both designs measured).

Outputs (each written atomically):
  --metrics      {model: {val_loss, val_acc, test_loss, test_acc}}: results only, one file, so
                 `dvc exp show` titles its columns fast.val_acc and `dvc metrics diff` shows
                 nothing but results
and per model <name> of params.yaml:
  <details-dir>/<name>.json            per-class validation accuracy and the confusion matrix
  <confusion-counts-dir>/<name>.csv    actual,predicted,count: 100 rows (dvc's confusion plot)
  <confusion-dir>/<name>.png           the confusion matrix (true label down, as in dvc's)
  <misclassified-dir>/<name>.png       misclassified validation digits, true and predicted
and across models:
  --summary      one row per model: val loss/accuracy, test accuracy, params, epochs, device
  --curves-png   train/val loss and val accuracy per epoch, every model
  --digits-png   a grid of validation digits with their labels (the tutorial's first picture)
"""

import argparse
from pathlib import Path

from mnist_pipeline.errors import UserError, stage_main

MISCLASSIFIED_SHOWN = 32
DIGITS_SHOWN = 32


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="(default: %(default)s)")
    parser.add_argument("--prepared", required=True, help="folder of the prepared tensors")
    parser.add_argument("--models-dir", required=True, help="folder of <name>.pt checkpoints")
    parser.add_argument("--history-dir", required=True, help="folder of <name>.tsv histories")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    for out in ("details", "confusion-counts", "confusion", "misclassified"):
        parser.add_argument(f"--{out}-dir", required=True)
    parser.add_argument("--summary", required=True, help="markdown table to write")
    parser.add_argument("--curves-png", required=True)
    parser.add_argument("--digits-png", required=True)
    args = parser.parse_args()

    from mnist_pipeline import atomic, plots, threads
    from mnist_pipeline.data import load_split
    from mnist_pipeline.device import select_device
    from mnist_pipeline.evaluate import score
    from mnist_pipeline.params import load_params
    from mnist_pipeline.summary import summary_table

    params = load_params(args.params)
    configs = params.models
    torch_threads = threads.use(params.threads)  # the count decides the metrics' last bits
    threads.check(torch_threads)
    splits = {split: load_split(args.prepared, split) for split in ("valid", "test")}
    # Every input is read and every model scored before anything is written: a missing or
    # broken input leaves the old outputs, not a mix of new and old.
    results, histories = {}, {}
    for name, config in configs.items():
        path = Path(args.models_dir, f"{name}.pt")
        results[name] = score(path, config, splits, select_device(config.device))
        histories[name] = read_history_file(Path(args.history_dir, f"{name}.tsv"))

    with plots.drawn_by(torch_threads):  # the pictures, drawn on leaving the block
        for name, result in results.items():
            write_model_outputs(args, name, result, splits["valid"])
            acc, test_acc = result["metrics"]["val_acc"], result["metrics"]["test_acc"]
            print(f"evaluate: {name} val_acc {acc:.4f} test_acc {test_acc:.4f}")
        atomic.write_json(args.metrics, {name: r["metrics"] for name, r in results.items()})
        rows = {name: r["metrics"] | r["facts"] for name, r in results.items()}
        atomic.write_text(args.summary, summary_table(rows))
        plots.curves_png(histories, args.curves_png)
        x, y = splits["valid"]
        shown = range(min(DIGITS_SHOWN, len(y)))
        plots.digit_grid(
            [x[i].numpy() for i in shown],
            [f"label {int(y[i])}" for i in shown],
            args.digits_png,
            f"The first {len(shown)} validation digits with their labels",
        )
    print(f"evaluate: {args.summary}, {args.curves_png}, {args.digits_png}")


def read_history_file(path: Path) -> list[dict]:
    from mnist_pipeline.history import read_history

    try:
        return read_history(path)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run dvc repro to produce it") from None
    except (KeyError, ValueError) as err:
        raise UserError(f"{path}: not a history file ({type(err).__name__}: {err})") from None


def write_model_outputs(args, name, result, valid_split) -> None:
    """Write one model's details, confusion counts and pictures."""
    from mnist_pipeline import atomic, plots
    from mnist_pipeline.evaluate import confusion_csv

    valid = result["valid"]
    atomic.write_json(
        Path(args.details_dir, f"{name}.json"),
        {"val_per_class_acc": valid["per_class_acc"], "val_confusion": valid["confusion"]},
    )
    x, y = valid_split
    actual, predicted = y.tolist(), valid["predicted"].tolist()
    counts = confusion_csv(valid["confusion"])
    atomic.write_text(Path(args.confusion_counts_dir, f"{name}.csv"), counts)
    title = f"{name}: validation confusion matrix (accuracy {valid['acc']:.4f})"
    plots.confusion_png(valid["confusion"], Path(args.confusion_dir, f"{name}.png"), title)
    wrong = [i for i, (a, p) in enumerate(zip(actual, predicted, strict=True)) if a != p]
    shown = wrong[:MISCLASSIFIED_SHOWN]
    plots.digit_grid(
        [x[i].numpy() for i in shown],
        [f"{actual[i]} as {predicted[i]}" for i in shown],
        Path(args.misclassified_dir, f"{name}.png"),
        f"{name}: first {len(shown)} of {len(wrong)} misclassified validation digits "
        "(true as predicted)",
        colors=["firebrick"] * len(shown),
    )


if __name__ == "__main__":
    main()
