"""The model registry: shapes, learning, and devices, for every architecture."""

import pytest
import torch
from conftest import make_mnist, train_config
from torch.utils.data import TensorDataset

from mnist_pipeline.errors import UserError
from mnist_pipeline.models import ARCHITECTURES, get_architecture
from mnist_pipeline.train import build_model, train_model

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here"),
        ],
    ),
]


@pytest.fixture(scope="module")
def tiny():
    (xt, yt), (xv, yv), _ = make_mnist((512, 256, 8))
    return TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt)), TensorDataset(
        torch.from_numpy(xv), torch.from_numpy(yv)
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_shape(arch, device):
    model, _, _ = build_model(train_config(arch), torch.device(device))
    x = torch.rand(5, 784, device=device)
    if get_architecture(arch).image_input:
        x = x.view(-1, 1, 28, 28)
    assert model(x).shape == (5, 10)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_one_fit_changes_parameters_and_lowers_loss(arch, tiny):
    cfg = train_config(arch, epochs=3, lr=0.05 if arch.startswith("logistic") else 0.1)
    before_model, _, _ = build_model(cfg, torch.device("cpu"))
    before = [p.detach().clone() for p in before_model.parameters()]
    model, history = train_model(cfg, *tiny, torch.device("cpu"))
    after = list(model.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("size", [28, 32, 64])
def test_cnn_adaptive_takes_any_image_size(size):
    model, _, _ = build_model(train_config("cnn_adaptive"), torch.device("cpu"))
    assert model(torch.rand(3, 1, size, size)).shape == (3, 10)


def test_logistic_scratch_uses_no_torch_nn_or_optim():
    model, loss_func, opt = build_model(train_config("logistic_scratch"), torch.device("cpu"))
    assert not isinstance(model, torch.nn.Module)
    assert type(opt).__name__ == "ScratchSGD"  # the hand-written update, not torch.optim
    assert model.weights.requires_grad and model.bias.requires_grad
    assert abs(model.weights.std().item() - 784**-0.5) < 0.005  # Xavier: 1/sqrt(784)


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(
        UserError, match="unknown model architecture 'vgg'; valid: logistic_scratch"
    ):
        get_architecture("vgg")
