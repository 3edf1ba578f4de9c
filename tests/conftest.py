"""Shared fixtures: tiny synthetic MNIST-format data; nothing here reaches the network."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

# pytest runs one worker per core, and each worker's processes (dvc stages included) inherit
# this: two threads per worker on a shared core spin against each other and run many times
# slower. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest

from mnist_pipeline.params import FetchConfig, TrainConfig, parse_params, parse_sources

REPO = Path(__file__).resolve().parents[1]


def make_split(n: int, rng: np.random.Generator, templates: np.ndarray):
    """n learnable MNIST-shaped samples: a per-class template plus noise, exactly pixel/256."""
    y = rng.integers(0, 10, size=n).astype(np.int64)
    noise = rng.integers(0, 64, size=(n, 784))
    pixels = np.clip(templates[y] * 190 + noise, 0, 255)
    return (pixels / 256).astype(np.float32), y


def make_mnist(sizes=(256, 128, 128), seed: int = 0):
    """((x_train, y_train), (x_valid, y_valid), (x_test, y_test)) like mnist.pkl.gz."""
    rng = np.random.default_rng(seed)
    templates = (rng.random((10, 784)) < 0.3).astype(np.int64)
    return tuple(make_split(n, rng, templates) for n in sizes)


def tiny_datasets(sizes=(256, 128)):
    """Train and valid TensorDatasets of tiny learnable MNIST-shaped data."""
    import torch
    from torch.utils.data import TensorDataset

    (xt, yt), (xv, yv), _ = make_mnist((*sizes, 8))
    return (
        TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)),
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
    )


def write_pickle_gz(path: Path, obj: object) -> str:
    """Write obj as a gzip'd pickle (protocol 2, like the real file); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(pickle.dumps(obj, protocol=2), compresslevel=1, mtime=0)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mnist_file(tmp_path) -> tuple[Path, str]:
    """A tiny synthetic mnist.pkl.gz and its sha256."""
    path = tmp_path / "mnist.pkl.gz"
    return path, write_pickle_gz(path, make_mnist())


@pytest.fixture
def prepared_dir(tmp_path, mnist_file) -> Path:
    """data/prepared made from the tiny synthetic file."""
    from mnist_pipeline.data import prepare

    out = tmp_path / "prepared"
    prepare(mnist_file[0], out)
    return out


def tiny_params(**overrides) -> dict:
    """A valid params dict for unit tests."""
    raw = {
        "seed": 0,
        "device": "cpu",
        "epochs": 1,
        "bs": 32,
        "lr": 0.1,
        "momentum": 0.9,
        "models": {"logistic": {"arch": "logistic"}, "cnn": {"arch": "cnn"}},
    }
    raw.update(overrides)
    return raw


class _OpensMarker:
    """Unpickling this calls open(marker, "w"): a pickle that runs code when loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def code_running_pickle(path: Path, marker: Path) -> None:
    """Write a gzip'd pickle at path that would create ``marker`` if an unpickler ran it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(pickle.dumps(_OpensMarker(marker), protocol=2)))


def fetch_config(*sources: dict, timeout: float = 2) -> FetchConfig:
    """The FetchConfig of fetch.timeout ``timeout`` and a sources.yaml of ``sources``."""
    return FetchConfig(timeout=float(timeout), sources=parse_sources({"sources": list(sources)}))


def train_config(arch: str = "logistic", **overrides) -> TrainConfig:
    """The TrainConfig of one model named ``arch``, as params.yaml would resolve it.

    ``overrides`` are the model's own keys (``lr=0.5``, ``epochs=2``, ``optimizer="adamw"``...);
    the rest comes from tiny_params, so the config passes the same validation as a real one.
    """
    params = parse_params(tiny_params(models={arch: {"arch": arch, **overrides}}))
    return params.model(arch)
