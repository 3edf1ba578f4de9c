"""prepare: safe unpickling, validation with clear errors, and the exact uint8 round trip."""

import numpy as np
import pytest
import torch
from conftest import code_running_pickle, make_mnist, write_pickle_gz

from mnist_pipeline.data import load_datasets, prepare, read_pickle_gz
from mnist_pipeline.errors import UserError


def test_prepare_round_trip_is_exact(tmp_path, mnist_file):
    path, _ = mnist_file
    sizes = prepare(path, tmp_path / "prepared")
    assert sizes == {"train": 256, "valid": 128, "test": 128}
    splits = make_mnist()
    datasets = load_datasets(tmp_path / "prepared")
    for (x, y), ds in zip(splits, datasets, strict=True):
        assert ds.tensors[0].dtype == torch.float32 and ds.tensors[1].dtype == torch.int64
        assert torch.equal(ds.tensors[0], torch.from_numpy(x))  # bit-exact
        assert torch.equal(ds.tensors[1], torch.from_numpy(y))
    stored = torch.load(tmp_path / "prepared" / "train.pt", weights_only=True)
    assert stored["x"].dtype == torch.uint8  # 4x smaller than float32 in the cache


def test_prepare_is_byte_identical_on_rerun(tmp_path, mnist_file):
    prepare(mnist_file[0], tmp_path / "a")
    prepare(mnist_file[0], tmp_path / "b")
    for split in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{split}.pt").read_bytes() == (
            tmp_path / "b" / f"{split}.pt"
        ).read_bytes()


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl.gz"
    code_running_pickle(path, marker)
    with pytest.raises(
        UserError, match="unsafe or invalid pickle: refused to load global (builtins|io).open"
    ):
        prepare(path, tmp_path / "prepared")
    assert not marker.exists()
    assert not (tmp_path / "prepared").exists()


def bad(splits_change):
    splits = [list(s) for s in make_mnist()]
    splits_change(splits)
    return tuple(tuple(s) for s in splits)


def set_(i, j, value):
    def change(splits):
        splits[i][j] = value(splits[i][j]) if callable(value) else value

    return change


def nan_pixel(x):
    x = x.copy()
    x[0, 0] = np.nan
    return x


@pytest.mark.parametrize(
    "obj, message",
    [
        (make_mnist()[:2], "expected 3 splits (train, valid, test), got tuple of length 2"),
        ({"train": 1}, "expected 3 splits (train, valid, test), got dict of length 1"),
        (bad(set_(0, 0, lambda x: x[:, :100])), "train split: x must be float32 of shape (N, 784)"),
        (bad(set_(1, 0, lambda x: x.astype(np.float64))), "valid split: x must be float32"),
        (bad(set_(0, 0, nan_pixel)), "train split: x contains NaN pixels"),
        (bad(set_(2, 0, lambda x: x * 2)), "test split: pixels must lie in [0, 1]"),
        (bad(set_(0, 1, lambda y: y + 5)), "train split: labels must lie in 0..9"),
        (bad(set_(2, 1, lambda y: y - 3)), "test split: labels must lie in 0..9"),
        (bad(set_(1, 1, lambda y: y[:-1])), "valid split: x has 128 rows but y has 127 labels"),
        (bad(set_(0, 1, lambda y: y.astype(np.float32))), "train split: y must be a 1-d integer"),
        # The last split is bad: the first two must not have been written (checked below).
        (bad(set_(2, 0, lambda x: x * np.float32(256 / 255))), "test split: pixels are not exact"),
    ],
)
def test_bad_structure_and_values_are_refused(tmp_path, obj, message):
    path = tmp_path / "bad.pkl.gz"
    write_pickle_gz(path, obj)
    with pytest.raises(UserError) as err:
        prepare(path, tmp_path / "prepared")
    assert message in str(err.value)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "prepared").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"plain text, not gzip", "not a gzip file"),
        (None, "truncated or corrupt gzip"),
    ],
)
def test_unreadable_files(tmp_path, mnist_file, content, message):
    path = tmp_path / "raw.pkl.gz"
    if content is None:  # the real file cut in half
        content = mnist_file[0].read_bytes()[: mnist_file[0].stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_pickle_gz(path)
    assert str(err.value).startswith(f"{path}: {message}") and "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="file not found; run the fetch stage first"):
        read_pickle_gz(tmp_path / "absent.pkl.gz")


def test_an_input_that_is_a_fifo_or_a_device_is_refused_not_waited_on(tmp_path, prepared_dir):
    import os

    from mnist_pipeline.data import load_split, read_pickle_gz

    os.mkfifo(tmp_path / "train.pt")
    cases = [
        (lambda: read_pickle_gz(tmp_path / "train.pt"), tmp_path / "train.pt", "a FIFO"),
        (lambda: read_pickle_gz(os.devnull), os.devnull, "a character device"),
        (lambda: load_split(tmp_path, "train"), tmp_path / "train.pt", "a FIFO"),
    ]
    for load, path, kind in cases:
        with pytest.raises(UserError) as err:
            load()
        assert str(err.value) == f"{path}: {kind}, not a regular file"
    assert len(load_split(prepared_dir, "train")[0])  # the good case beside them
