"""Variants of `fast` against the shipped one and the tutorial `cnn`, interleaved in one run.

Each variant trains seeds 0-4 for one epoch through the project's ``train_model`` (the model's
spec swapped in), beside the shipped `fast` in a shuffled order, then one run of `cnn` per
seed. It prints a Markdown row per variant: its median seconds as a ratio to cnn's, and its
validation accuracy's median and minimum (issue 26: ratio <= 0.4, median >= 0.990, min >=
0.989). Not part of `make bench`: it takes about three minutes.

    python bench/fast_variants.py [--only NAME ...] [--seeds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import random
import statistics
import time
from collections.abc import Callable
from unittest import mock

import torch
from torch import nn
from torch.utils.data import TensorDataset

from mnist_pipeline import train as train_module
from mnist_pipeline.data import load_datasets
from mnist_pipeline.models import fast, get_model
from mnist_pipeline.params import load_params

SHIPPED = get_model("fast")
FLAT = fast.Lambda(fast.flatten_channels_last)


def net(*layers: nn.Module) -> nn.Module:
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def convs(w1=32, w2=64, k1=3, k2=3, stride2=1, side=3, bn1=True, stem_at=0) -> Callable:
    """The shipped layout with other trained convolutions: stem, conv-BN-ReLU twice, linear."""

    def build() -> nn.Module:
        first = [nn.Conv2d(32, w1, k1, bias=not bn1)] + ([nn.BatchNorm2d(w1)] if bn1 else [])
        return net(
            *[Crop(stem_at)] * bool(stem_at),
            fast.WhiteningStem(16),
            *first,
            nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, k2, stride=stride2, bias=False),
            nn.BatchNorm2d(w2),
            nn.ReLU(inplace=True),
            FLAT,
            nn.Linear(w2 * side * side, 10),
        )

    return build


class Crop(nn.Module):
    """The centre of the image: ``margin`` pixels off each side."""

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x):
        return x[..., self.margin : 28 - self.margin, self.margin : 28 - self.margin]


class Shifted(nn.Sequential):
    """In eval mode, the mean of the outputs for the image and its copies rolled by ``shifts``
    pixels across (test-time augmentation); training sees the image alone."""

    shifts: tuple[int, ...] = (1,)

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            return out
        for s in self.shifts:
            out = out + super().forward(torch.roll(x, s, 3))
        return out / (1 + len(self.shifts))


def shifted(*shifts: int) -> Callable:
    def build() -> nn.Module:
        model = Shifted(*fast.fast_cnn())
        model.shifts = shifts
        return model

    return build


class Bf16(nn.Module):
    """The stem in float32, the trained layers under CPU autocast to bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.net = fast.fast_cnn()

    def forward(self, x):
        h = self.net[0](x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.net[1:](h).float()


def fit_first_stem(model, images) -> None:
    next(m for m in model.modules() if isinstance(m, fast.WhiteningStem)).fit(images)


def zero_head() -> nn.Module:
    model = fast.fast_cnn()
    nn.init.zeros_(model[-1].weight)
    nn.init.zeros_(model[-1].bias)
    return model


# name -> (build, config overrides)
VARIANTS = {
    "shipped": (fast.fast_cnn, {}),
    "second conv stride 2 (2x2 map)": (convs(stride2=2, side=2), {}),
    "24x24 centre crop": (convs(side=2, stem_at=2), {}),
    "24x24 crop, convs 48/96": (convs(48, 96, side=2, stem_at=2), {}),
    "no BatchNorm after the first conv": (convs(bn1=False), {}),
    "2x2 kernels, second stride 2": (convs(k1=2, k2=2, stride2=2), {}),
    "second conv 2x2 (4x4 map)": (convs(k2=2, side=4), {}),
    "trained layers in bfloat16 (autocast)": (Bf16, {}),
    "shift TTA, +1 px (2 views)": (shifted(1), {}),
    "shift TTA, +-1 px (3 views)": (shifted(1, -1), {}),
    "zero-initialised head": (zero_head, {}),
    "lr 0.015": (fast.fast_cnn, {"lr": 0.015}),
    "lr 0.03": (fast.fast_cnn, {"lr": 0.03}),
    "bs 384, lr 0.03": (fast.fast_cnn, {"bs": 384, "lr": 0.03}),
    "label smoothing 0.2": (fast.fast_cnn, {"label_smoothing": 0.2}),
}


def train(spec, config, train_ds, valid_ds) -> tuple[float, float]:
    """(seconds, final val acc) of ``train_model`` with ``spec`` as the model's, output muted."""
    with mock.patch.object(train_module, "get_model", lambda name: spec):
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            _, history = train_module.train_model(config, train_ds, valid_ds, "cpu")
    return time.perf_counter() - start, history[-1]["val_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)  # params.yaml's threads, as the train stage sets them
    params = load_params("params.yaml")
    train_ds, valid_ds = load_datasets("data/prepared", splits=("train", "valid"))
    few = TensorDataset(*(t[:2000] for t in train_ds.tensors))
    names = ["shipped"] + [n for n in args.only if n != "shipped"]
    specs = {
        name: (dataclasses.replace(SHIPPED, build=build, fit_data=fit_first_stem), over)
        for name, (build, over) in ((n, VARIANTS[n]) for n in names)
    }
    specs["shipped"] = (SHIPPED, {})
    cnn_spec, cnn_config = get_model("cnn"), params.model("cnn")
    for spec, over in specs.values():  # the first run of each shape pays oneDNN's set-up
        train(spec, dataclasses.replace(params.model("fast"), **over), few, valid_ds)
    train(cnn_spec, dataclasses.replace(cnn_config, epochs=1), few, valid_ds)
    runs = {name: [] for name in names}
    cnn = []
    order = random.Random(0)  # a shuffled order each seed: no variant always runs first
    for seed in range(args.seeds):
        for name in order.sample(names, len(names)):
            spec, over = specs[name]
            config = dataclasses.replace(params.model("fast"), seed=seed, **over)
            runs[name].append(train(spec, config, train_ds, valid_ds))
        cnn.append(train(cnn_spec, cnn_config, train_ds, valid_ds)[0])
    cnn_seconds = statistics.median(cnn)
    print(f"cnn: median {cnn_seconds:.2f} s over {args.seeds} runs\n")
    print("| variant | seconds / cnn's | val acc median | val acc min |")
    print("|---|---:|---:|---:|")
    for name, results in runs.items():
        seconds = statistics.median(s for s, _ in results)
        accs = [a for _, a in results]
        print(
            f"| {name} | {seconds / cnn_seconds:.2f} | {statistics.median(accs):.4f} "
            f"| {min(accs):.4f} |"
        )


if __name__ == "__main__":
    main()
