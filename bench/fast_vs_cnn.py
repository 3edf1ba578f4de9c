"""Time to a good model: `fast` (seeds 0, 1, 2) against the tutorial `cnn`, interleaved."""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
from torch.utils.data import TensorDataset

from mnist_pipeline.train import train_model

DEVICE = torch.device("cpu")


def seconds_and_acc(config, train_ds, valid_ds) -> tuple[float, float]:
    """Train ``config``; (seconds, final validation accuracy). The seconds are the wall of
    train_model: the epochs with their validation, and the set-up before them (fast's stem is
    fitted to the training images there)."""
    start = time.perf_counter()
    _, history = train_model(config, train_ds, valid_ds, DEVICE)
    return time.perf_counter() - start, history[-1]["val_acc"]


def bench_models(params, train_ds, valid_ds) -> dict:
    """fast for seeds 0, 1, 2, each next to a run of the tutorial cnn (2 epochs each)."""
    fast, cnn = [], []
    few = TensorDataset(*(t[:2000] for t in train_ds.tensors))
    for name in ("fast", "cnn"):  # the first model a process trains pays oneDNN's set-up
        train_model(dataclasses.replace(params.model(name), epochs=1), few, valid_ds, DEVICE)
    for seed in range(3):
        fast.append(
            seconds_and_acc(
                dataclasses.replace(params.model("fast"), seed=seed), train_ds, valid_ds
            )
        )
        cnn.append(seconds_and_acc(params.model("cnn"), train_ds, valid_ds))
        print(f"seed {seed}: fast {fast[-1]}, cnn {cnn[-1]}", flush=True)
    return {
        "fast": fast,
        "cnn": cnn,
        "fast_seconds": statistics.median(s for s, _ in fast),
        "fast_acc": statistics.median(a for _, a in fast),
        "cnn_seconds": statistics.median(s for s, _ in cnn),
        "cnn_acc": statistics.median(a for _, a in cnn),
        "fast_config": params.model("fast"),
        "cnn_config": params.model("cnn"),
    }
