"""Evaluation metrics: loss (summed, divided by N), accuracy, per-class accuracy, confusion."""

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
