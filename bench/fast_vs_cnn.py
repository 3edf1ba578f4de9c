"""Time to a good model: `fast` (seeds 0-4, 1 epoch) against the tutorial `cnn`, interleaved."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from torch.utils.data import TensorDataset

from mnist_pipeline.evaluate import predict
from mnist_pipeline.models import fast as fast_module
from mnist_pipeline.models import get_model
from mnist_pipeline.train import train_model

DEVICE = torch.device("cpu")
SEEDS = range(5)


def fast_recipe(config) -> str:
    """fast's recipe in words: its optimizer and schedule are its own (models/fast.py)."""
    b1, b2 = fast_module.BETAS
    return (
        f"{config.epochs} epoch{'s' if config.epochs != 1 else ''}, bs {config.bs}, "
        f"AdamW (betas {b1:g}, {b2:g}) lr {config.lr:g} wd {config.weight_decay:g}, one-cycle, "
        f"label smoothing {config.label_smoothing:g}"
    )


def seconds_and_acc(config, train_ds, valid_ds, test_ds=None) -> tuple[float, ...]:
    """Train ``config``; (seconds, final validation accuracy), and the test accuracy when
    ``test_ds`` is given. The seconds are the wall of train_model: the epochs with their
    validation, and the set-up before them (fast's stem is fitted to the training images
    there); the test split is scored after them."""
    start = time.perf_counter()
    model, history = train_model(config, train_ds, valid_ds, DEVICE)
    seconds = time.perf_counter() - start
    if test_ds is None:
        return seconds, history[-1]["val_acc"]
    x, y = test_ds.tensors
    predicted = predict(model, x, 2 * config.bs, get_model(config.arch).image_input, DEVICE)
    return seconds, history[-1]["val_acc"], (predicted.argmax(1) == y).double().mean().item()


def bench_models(params, train_ds, valid_ds, test_ds) -> dict:
    """fast for seeds 0-4, each next to a run of the tutorial cnn (as shipped: 2 epochs);
    fast's test accuracy too (issue 26 asks for it over the seeds)."""
    fast, cnn = [], []
    few = TensorDataset(*(t[:2000] for t in train_ds.tensors))
    for name in ("fast", "cnn"):  # the first model a process trains pays oneDNN's set-up
        train_model(dataclasses.replace(params.model(name), epochs=1), few, valid_ds, DEVICE)
    for seed in SEEDS:
        fast.append(
            seconds_and_acc(
                dataclasses.replace(params.model("fast"), seed=seed), train_ds, valid_ds, test_ds
            )
        )
        cnn.append(seconds_and_acc(params.model("cnn"), train_ds, valid_ds))
        print(f"seed {seed}: fast {fast[-1]}, cnn {cnn[-1]}", flush=True)
    return {
        "fast": fast,
        "cnn": cnn,
        "fast_seconds": statistics.median(s for s, _, _ in fast),
        "fast_acc": statistics.median(a for _, a, _ in fast),
        "fast_min_acc": min(a for _, a, _ in fast),
        "fast_test_acc": statistics.median(t for _, _, t in fast),
        "fast_min_test_acc": min(t for _, _, t in fast),
        "cnn_seconds": statistics.median(s for s, _ in cnn),
        "cnn_acc": statistics.median(a for _, a in cnn),
        "fast_config": params.model("fast"),
        "fast_recipe": fast_recipe(params.model("fast")),
        "cnn_config": params.model("cnn"),
    }
