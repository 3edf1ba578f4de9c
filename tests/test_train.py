"""Training library: device choice, the batch loader, determinism, divergence, checkpoints."""

import pytest
import torch
from conftest import make_mnist, train_config
from torch.utils.data import TensorDataset

from mnist_pipeline.checkpoints import checkpoint, load_checkpoint
from mnist_pipeline.device import select_device
from mnist_pipeline.errors import UserError
from mnist_pipeline.loader import Batches
from mnist_pipeline.train import DivergenceError, train_model


def tiny_datasets(sizes=(256, 128)):
    (xt, yt), (xv, yv), _ = make_mnist((*sizes, 8))
    return (
        TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)),
        TensorDataset(torch.from_numpy(xv), torch.from_numpy(yv)),
    )


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_absent_cuda_is_an_error_not_a_fallback(spec):
    with pytest.raises(UserError, match=f"device '{spec}': CUDA is not available here"):
        select_device(spec)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_absent_mps_is_an_error():
    with pytest.raises(UserError, match="MPS is not available"):
        select_device("mps")


def test_batches_cover_every_sample_once_in_seeded_order():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    batches = list(Batches(x, y, bs=4, shuffle=True, seed=1))
    assert [len(yb) for _, yb, _ in batches] == [4, 4, 2]
    assert {w for _, _, w in batches} == {1.0}  # one process: every batch counts fully
    seen = torch.cat([yb for _, yb, _ in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert not torch.equal(seen, torch.arange(10))  # shuffled
    again = torch.cat([yb for _, yb, _ in Batches(x, y, bs=4, shuffle=True, seed=1)])
    assert torch.equal(seen, again)  # same seed, same order
    for xb, yb, _ in batches:
        assert torch.equal(xb.squeeze(1).long(), yb)  # images stay paired with labels


def test_batches_shards_are_disjoint_and_weighted():
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    loaders = [Batches(x, y, bs=4, shuffle=True, seed=3, rank=r, world=2) for r in range(2)]
    full = [yb for _, yb, _ in Batches(x, y, bs=4, shuffle=True, seed=3)]
    for i, (a, b) in enumerate(zip(*[list(loader) for loader in loaders], strict=True)):
        assert torch.equal(torch.cat([a[1], b[1]]), full[i])  # shards rebuild the global batch
        # each shard's weight is its share of the global batch times the world size
        assert a[2] == len(a[1]) * 2 / len(full[i]) and b[2] == len(b[1]) * 2 / len(full[i])


def test_training_is_deterministic_on_cpu():
    datasets = tiny_datasets()
    runs = [
        train_model(train_config("cnn", epochs=2), *datasets, torch.device("cpu")) for _ in range(2)
    ]
    (m1, h1), (m2, h2) = runs
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in h1]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in h2]


def test_different_seed_gives_different_weights():
    datasets = tiny_datasets()
    m1, _ = train_model(train_config(seed=0), *datasets, torch.device("cpu"))
    m2, _ = train_model(train_config(seed=1), *datasets, torch.device("cpu"))
    assert not torch.equal(m1.lin.weight, m2.lin.weight)


@pytest.mark.parametrize("arch, lr", [("logistic_scratch", 100.0), ("cnn", 1e20), ("fast", 1e20)])
def test_divergence_names_model_epoch_and_lr(arch, lr):
    match = rf"model '{arch}' diverged in epoch 0: loss is (nan|inf) at lr {lr:g}; lower lr"
    with pytest.raises(DivergenceError, match=match.replace("+", r"\+")):
        train_model(train_config(arch, lr=lr), *tiny_datasets(), torch.device("cpu"))


def test_checkpoint_loads_with_weights_only(tmp_path):
    from mnist_pipeline.atomic import torch_save

    cfg = train_config("cnn_sequential", epochs=1)
    model, _ = train_model(cfg, *tiny_datasets(), torch.device("cpu"))
    torch_save(checkpoint(model, cfg, torch.device("cpu")), tmp_path / "m.pt")
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt", cfg)
    assert ckpt["config"]["arch"] == "cnn_sequential" and ckpt["device"] == "cpu"
    x = torch.rand(4, 784)
    assert torch.equal(loaded(x), model(x))
