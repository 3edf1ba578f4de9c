"""Data path: seconds per training epoch of `logistic` and `cnn` fed by the project's loader,
raw tensor slicing (the lower bound for the same arithmetic) and the tutorial's
DataLoader(TensorDataset, shuffle=True)."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.data import DataLoader

from mnist_pipeline.loader import get_data
from mnist_pipeline.models import get_model
from mnist_pipeline.optim import recipe
from mnist_pipeline.train import build_model, loss_batch

DEVICE = torch.device("cpu")


def epoch_with(loader_kind: str, arch_name: str, config, train_ds) -> float:
    """Seconds for one training epoch of ``arch_name`` fed by ``loader_kind``."""
    spec = get_model(arch_name)
    model = build_model(spec, config, DEVICE)
    loss_func = spec.loss
    opt = recipe(spec, model.parameters(), config, steps_per_epoch=1).optimizer
    x, y = train_ds.tensors
    if loader_kind == "project":
        loader, _ = get_data(train_ds, train_ds, config.bs, seed=0, image_input=spec.image_input)
    elif loader_kind == "raw":
        loader = None
    else:
        loader = DataLoader(train_ds, batch_size=config.bs, shuffle=True)
    start = time.perf_counter()
    if loader is None:  # raw tensor slicing, inline: the lower bound
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(x), config.bs):
            idx = perm[i : i + config.bs]
            loss_batch(model, loss_func, x[idx], y[idx], opt)
    else:
        for xb, yb, *_ in loader:
            loss_batch(model, loss_func, xb, yb, opt)
    return time.perf_counter() - start


def bench_data_path(params, train_ds, runs: int) -> list[dict]:
    rows = []
    for name in ("logistic", "cnn"):
        config = params.model(name)
        result = {"model": name}
        for kind in ("raw", "project", "dataloader"):
            result[kind] = statistics.median(
                epoch_with(kind, name, config, train_ds) for _ in range(runs)
            )
            print(f"data path: {name} {kind} {result[kind]:.2f}s", flush=True)
        rows.append(result)
    return rows
