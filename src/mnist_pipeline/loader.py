"""Whole-batch loaders over in-memory tensors: the tutorial's get_data without per-sample work."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class Batches:
    """Whole batches sliced from in-memory tensors: a seeded shuffle, then one index per batch.

    Unlike ``DataLoader(TensorDataset)``, nothing is fetched sample by sample. Each item is
    ``(xb, yb, weight)``: under torchrun (``world > 1``) each rank takes a disjoint, contiguous
    shard of every global batch, and ``weight`` says how much this shard counts toward the
    global mean loss (1.0 in a single process).
    """

    def __init__(self, x, y, bs, shuffle=False, seed=0, rank=0, world=1) -> None:
        self.x, self.y, self.bs, self.shuffle = x, y, bs, shuffle
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.bs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        n = len(self.x)
        order = None
        if self.shuffle:  # shuffled on the CPU with the seeded generator: same order everywhere
            order = torch.randperm(n, generator=self.generator).to(self.x.device)
        for start in range(0, n, self.bs):
            stop, weight = min(start + self.bs, n), 1.0
            if self.world > 1:  # this rank's shard of the global batch [start, stop)
                bounds = torch.linspace(start, stop, self.world + 1).round().long().tolist()
                lo, hi = bounds[self.rank], bounds[self.rank + 1]
                weight = (hi - lo) * self.world / (stop - start)
                start, stop = lo, hi
            idx = slice(start, stop) if order is None else order[start:stop]  # a slice: views
            yield self.x[idx], self.y[idx], weight


def get_data(train_ds, valid_ds, bs, *, device="cpu", seed=0, image_input=False, rank=0, world=1):
    """The tutorial's get_data: a shuffled train loader and a valid loader of twice the batch.

    The tensors move to ``device`` once; ``image_input`` reshapes them to (N, 1, 28, 28) once
    (the tutorial's ``preprocess``/``WrappedDataLoader``), so batches are views or one gather.
    """

    def prepare(ds):
        x, y = ds.tensors
        x = x.to(device)
        return (x.view(-1, 1, 28, 28) if image_input else x), y.to(device)

    return (
        Batches(*prepare(train_ds), bs, shuffle=True, seed=seed, rank=rank, world=world),
        Batches(*prepare(valid_ds), bs * 2, rank=rank, world=world),
    )
