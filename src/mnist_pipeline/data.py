"""MNIST data: safe unpickling, validation, compact storage and datasets.

The tutorial's mnist.pkl.gz holds ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)),
x float32 (N, 784) equal to pixel/256, y int64 labels. It is a downloaded pickle, so it is
read with an unpickler that admits only what numpy arrays need: nothing in it can run code.
Batches are made in loader.py.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from pathlib import Path

import numpy as np

from .atomic import check_input, torch_save
from .errors import UserError

SPLITS = ("train", "valid", "test")
SCALE = 256  # the file stores pixel / 256 exactly

# (module, name) pairs a pickled numpy array may reference; anything else is refused.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol 2 stores bytes under Python 3; only encodes a string
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        if module.startswith("numpy.core."):  # numpy 2 moved numpy.core to numpy._core
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def read_pickle_gz(path: str | os.PathLike) -> object:
    """Read a gzip'd pickle safely; every failure is a one-line UserError naming the file."""
    path = Path(path)
    check_input(path)  # a FIFO would block the read, /dev/zero never end it
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; run the fetch stage first") from None
    if not raw:
        raise UserError(f"{path}: file is empty")
    try:
        data = gzip.decompress(raw)
    except gzip.BadGzipFile:
        raise UserError(f"{path}: not a gzip file") from None
    except (EOFError, zlib.error):
        raise UserError(f"{path}: truncated or corrupt gzip data") from None
    try:  # numpy arrays, tuples, lists and plain values; any other global is refused
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin-1").load()
    except pickle.UnpicklingError as err:
        raise UserError(f"{path}: unsafe or invalid pickle: {err}") from None
    except Exception as err:  # malformed pickle streams raise many types
        raise UserError(f"{path}: invalid pickle ({type(err).__name__}: {err})") from None


def validate_splits(obj: object, path: str | os.PathLike) -> dict[str, tuple[np.ndarray, ...]]:
    """Check three (x, y) splits: x float32 (N, 784) in [0, 1], y integer 0..9, same N; return
    each as x * 256 in uint8 and y in int64, refusing x that is not exactly pixel / 256."""
    if not isinstance(obj, tuple | list) or len(obj) != 3:
        got = f"{type(obj).__name__} of length {len(obj)}" if hasattr(obj, "__len__") else obj
        raise UserError(f"{path}: expected 3 splits (train, valid, test), got {got}")
    splits = {}
    for name, split in zip(SPLITS, obj, strict=True):
        where = f"{path}: {name} split"
        if not isinstance(split, tuple | list) or len(split) != 2:
            raise UserError(f"{where}: expected a pair (x, y)")
        x, y = split
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise UserError(f"{where}: x and y must be numpy arrays")
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
            raise UserError(
                f"{where}: x must be float32 of shape (N, 784), got {x.dtype} {x.shape}"
            )
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UserError(f"{where}: y must be a 1-d integer array, got {y.dtype} {y.shape}")
        if len(x) != len(y):
            raise UserError(f"{where}: x has {len(x)} rows but y has {len(y)} labels")
        if len(x) == 0:
            raise UserError(f"{where}: is empty")
        if np.isnan(x).any():
            raise UserError(f"{where}: x contains NaN pixels")
        if x.min() < 0 or x.max() > 1:
            raise UserError(f"{where}: pixels must lie in [0, 1], found {x.min()}..{x.max()}")
        if y.min() < 0 or y.max() > 9:
            raise UserError(f"{where}: labels must lie in 0..9, found {y.min()}..{y.max()}")
        # x is in [0, 1] and x * 256 loses no bit in float32: p / 256 == x (the round trip).
        scaled = x * np.float32(SCALE)
        if scaled.max() > 255 or not np.array_equal(scaled, np.round(scaled)):
            raise UserError(f"{where}: pixels are not exact multiples of 1/256 in [0, 255/256]")
        splits[name] = (scaled.astype(np.uint8), y.astype(np.int64))
    return splits


def prepare(raw_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, int]:
    """Write one ``<split>.pt`` per split: {x: uint8 (N, 784), y: int64 (N,)}; return sizes."""
    import torch

    # Every split is checked and converted before any file is written.
    splits = validate_splits(read_pickle_gz(raw_path), raw_path)
    for name, (x, y) in splits.items():
        torch_save(
            {"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, Path(out_dir) / f"{name}.pt"
        )
    return {name: len(y) for name, (x, y) in splits.items()}


def load_split(prepared_dir: str | os.PathLike, split: str):
    """Load one prepared split as float32 images (N, 784) in [0, 1) and int64 labels (N,)."""
    import torch

    path = Path(prepared_dir) / f"{split}.pt"
    check_input(path)
    try:  # mapped, not read: the pages go straight from the page cache into the conversion
        tensors = torch.load(path, weights_only=True, mmap=True)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the prepare stage first") from None
    except Exception as err:
        raise UserError(f"{path}: unreadable prepared data ({type(err).__name__})") from None
    if not isinstance(tensors, dict) or set(tensors) != {"x", "y"}:
        raise UserError(f"{path}: expected a dict with tensors 'x' and 'y'")
    x, y = tensors["x"], tensors["y"]
    if x.dtype != torch.uint8 or y.dtype != torch.int64 or len(x) != len(y):
        raise UserError(f"{path}: expected uint8 x and int64 y of the same length")
    return x.float().div_(SCALE), y


def load_datasets(prepared_dir: str | os.PathLike, splits=SPLITS):
    """The train, valid and test TensorDatasets, float32 images exactly as the tutorial had."""
    from torch.utils.data import TensorDataset

    return tuple(TensorDataset(*load_split(prepared_dir, s)) for s in splits)
