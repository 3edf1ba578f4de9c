"""Scoring a checkpoint: loss (summed, divided by N), accuracy, per-class accuracy, confusion."""

from __future__ import annotations

import torch

NUM_CLASSES = 10


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
    rows = (
        f"{actual},{predicted},{count}\n"
        for actual, row in enumerate(confusion)
        for predicted, count in enumerate(row)
    )
    return "actual,predicted,count\n" + "".join(rows)


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
