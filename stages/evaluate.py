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

from mnist_pipeline.errors import stage_main


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

    from dataclasses import fields

    from mnist_pipeline.evaluate import Outputs, evaluate_models
    from mnist_pipeline.params import load_params

    outputs = Outputs(**{f.name: getattr(args, f.name) for f in fields(Outputs)})
    evaluate_models(
        load_params(args.params), args.prepared, args.models_dir, args.history_dir, outputs
    )


if __name__ == "__main__":
    main()
