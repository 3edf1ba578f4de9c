"""Scoring: every model of params.yaml on the validation and test splits, and what shows it
(``evaluate_models``: the evaluate stage's work, writing ``Outputs``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import atomic
from .history import read_history

NUM_CLASSES = 10
MISCLASSIFIED_SHOWN = 32
DIGITS_SHOWN = 32


@torch.no_grad()
def predict(model, x: torch.Tensor, bs: int, image_input: bool, device) -> torch.Tensor:
    """Model outputs (N, 10) for images x (N, 784), in batches, on ``device``; returned on CPU."""
    model.eval()
    x = x.to(device)
    if image_input:
        x = x.view(-1, 1, 28, 28)
    return torch.cat([model(x[i : i + bs]).float().cpu() for i in range(0, len(x), bs)])


def confusion_matrix(actual: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """counts[i, j]: samples of class i predicted as j."""
    index = actual * NUM_CLASSES + predicted
    return torch.bincount(index, minlength=NUM_CLASSES**2).view(NUM_CLASSES, NUM_CLASSES)


def classification_metrics(outputs: torch.Tensor, targets: torch.Tensor, loss_func) -> dict:
    """Loss with reduction='sum' divided by N (independent of batch size), accuracy, per class."""
    predicted = outputs.argmax(dim=1)
    confusion = confusion_matrix(targets, predicted)
    per_class = confusion.diag().double() / confusion.sum(dim=1).clamp(min=1).double()
    return {
        "loss": loss_func(outputs, targets, reduction="sum").item() / len(targets),
        "acc": (predicted == targets).double().mean().item(),
        "per_class_acc": {str(c): round(v, 6) for c, v in enumerate(per_class.tolist())},
        "confusion": confusion.tolist(),
        "predicted": predicted,
    }


def confusion_csv(confusion: list[list[int]]) -> str:
    """The confusion matrix as CSV, one row per (actual, predicted) cell: 100 rows, not N."""
    cells = (f"{a},{p},{n}\n" for a, row in enumerate(confusion) for p, n in enumerate(row))
    return "actual,predicted,count\n" + "".join(cells)


def score(checkpoint_path, config, splits: dict, device) -> dict:
    """One model scored on each split of ``splits`` ({name: (x, y)}), in memory.

    ``metrics``: loss and accuracy per split, what `dvc metrics diff` compares; ``facts``:
    parameters, epochs and device, for the summary table; ``valid``: the validation results.
    """
    from .checkpoints import load_checkpoint

    model, ckpt, spec = load_checkpoint(checkpoint_path, config, device)
    results = {}
    for split, (x, y) in splits.items():
        outputs = predict(model, x, 2 * config.bs, spec.image_input, device)
        results[split] = classification_metrics(outputs, y, spec.loss)
    valid, test = results["valid"], results["test"]
    return {
        "metrics": {
            "val_loss": round(valid["loss"], 6),
            "val_acc": round(valid["acc"], 6),
            "test_loss": round(test["loss"], 6),
            "test_acc": round(test["acc"], 6),
        },
        "facts": {
            "parameters": ckpt["parameters"],
            "epochs": ckpt["config"]["epochs"],
            "device": ckpt["device"],
        },
        "valid": valid,
    }


@dataclass(frozen=True)
class Outputs:
    """Where evaluate writes, as dvc.yaml names it; a folder holds one file per model."""

    metrics: str  # {model: {val_loss, val_acc, test_loss, test_acc}}: results only
    details_dir: str  # <name>.json: per-class validation accuracy and the confusion matrix
    confusion_counts_dir: str  # <name>.csv: actual,predicted,count (dvc's confusion plot)
    confusion_dir: str  # <name>.png: the confusion matrix (true label down, as in dvc's)
    misclassified_dir: str  # <name>.png: misclassified validation digits, true and predicted
    summary: str  # one row per model: val loss/accuracy, test accuracy, params, epochs, device
    curves_png: str  # train/val loss and val accuracy per epoch, every model
    digits_png: str  # validation digits with their labels (the tutorial's first picture)


def evaluate_models(params, prepared, models_dir, history_dir, outputs: Outputs) -> None:
    """Score every model of ``params`` and write ``outputs``.

    Every input is read and every model scored before anything is written: a missing or
    broken input leaves the old outputs, not a mix of new and old.
    """
    from . import plots, threads
    from .data import load_split
    from .device import select_device
    from .summary import summary_table

    torch_threads = threads.use(params.threads)  # the count decides the metrics' last bits
    threads.check(torch_threads)
    splits = {split: load_split(prepared, split) for split in ("valid", "test")}
    results, histories = {}, {}
    for name, config in params.models.items():
        path = Path(models_dir, f"{name}.pt")
        results[name] = score(path, config, splits, select_device(config.device))
        histories[name] = read_history(Path(history_dir, f"{name}.tsv"))

    with plots.drawn_by(torch_threads) as draw:  # the pictures, drawn on leaving the block
        for name, result in results.items():
            _write_model(outputs, name, result, splits["valid"], draw)
            acc, test_acc = result["metrics"]["val_acc"], result["metrics"]["test_acc"]
            print(f"evaluate: {name} val_acc {acc:.4f} test_acc {test_acc:.4f}")
        atomic.write_json(outputs.metrics, {name: r["metrics"] for name, r in results.items()})
        rows = {name: r["metrics"] | r["facts"] for name, r in results.items()}
        atomic.write_text(outputs.summary, summary_table(rows))
        draw(plots.curves_png, histories, outputs.curves_png)
        x, y = splits["valid"]
        shown = range(min(DIGITS_SHOWN, len(y)))
        draw(
            plots.digit_grid,
            [x[i].numpy() for i in shown],
            [f"label {int(y[i])}" for i in shown],
            outputs.digits_png,
            f"The first {len(shown)} validation digits with their labels",
        )
    print(f"evaluate: {outputs.summary}, {outputs.curves_png}, {outputs.digits_png}")


def _write_model(outputs: Outputs, name: str, result: dict, valid_split, draw) -> None:
    """Write one model's details and confusion counts, and queue its pictures to ``draw``."""
    from . import plots

    valid = result["valid"]
    atomic.write_json(
        Path(outputs.details_dir, f"{name}.json"),
        {"val_per_class_acc": valid["per_class_acc"], "val_confusion": valid["confusion"]},
    )
    counts = Path(outputs.confusion_counts_dir, f"{name}.csv")
    atomic.write_text(counts, confusion_csv(valid["confusion"]))
    title = f"{name}: validation confusion matrix (accuracy {valid['acc']:.4f})"
    draw(plots.confusion_png, valid["confusion"], Path(outputs.confusion_dir, f"{name}.png"), title)
    x, y = valid_split
    actual, predicted = y.tolist(), valid["predicted"].tolist()
    wrong = [i for i, (a, p) in enumerate(zip(actual, predicted, strict=True)) if a != p]
    shown = wrong[:MISCLASSIFIED_SHOWN]
    draw(
        plots.digit_grid,
        [x[i].numpy() for i in shown],
        [f"{actual[i]} as {predicted[i]}" for i in shown],
        Path(outputs.misclassified_dir, f"{name}.png"),
        f"{name}: first {len(shown)} of {len(wrong)} misclassified validation digits "
        "(true as predicted)",
        colors=["firebrick"] * len(shown),
    )
