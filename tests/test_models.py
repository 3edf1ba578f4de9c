"""The model registry: shapes, learning, and devices, for every architecture."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_mnist, train_config
from torch.utils.data import TensorDataset

from mnist_pipeline.errors import UserError
from mnist_pipeline.loader import Batches
from mnist_pipeline.models import ARCHITECTURES, WhiteningStem, cross_entropy, get_architecture
from mnist_pipeline.train import build_model, evaluate_loader, smoothed, train_model

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
    fit_data = get_architecture(arch).fit_data
    if fit_data is not None:  # fast's stem: fitted on the CPU, copied to the device
        fit_data(model, torch.rand(64, 784))
        assert model[0].weight.device.type == device and model[0].weight.abs().sum() > 0
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


def stem_responses(stem: WhiteningStem, images: torch.Tensor) -> torch.Tensor:
    """The stem's filters on every patch it sees, before pooling: (patches, channels)."""
    out = F.conv2d(images.view(-1, 1, 28, 28), stem.weight.contiguous(), stride=2, padding=2)
    return out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).double()


def test_whitening_stem_whitens_the_patches_it_was_fit_on(tiny):
    images = tiny[0].tensors[0]
    stem = WhiteningStem(components=8)
    stem.fit(images)
    responses = stem_responses(stem, images[:2000])
    first, negated = responses[:, :8], responses[:, 8:]
    assert torch.equal(negated, -first)  # each filter next to its negation
    # Unit variance and uncorrelated: the covariance of the responses is the identity.
    assert torch.allclose(torch.cov(first.T), torch.eye(8, dtype=torch.float64), atol=0.02)
    again = WhiteningStem(components=8)
    again.fit(images)
    assert torch.equal(again.weight, stem.weight)  # deterministic, signs included


def test_fast_stem_comes_from_the_training_images_is_not_trained_and_is_saved(tiny):
    model, _ = train_model(train_config("fast", epochs=2), *tiny, torch.device("cpu"))
    fitted = WhiteningStem()
    fitted.fit(tiny[0].tensors[0])
    assert fitted.weight.abs().sum() > 0
    assert torch.equal(model[0].weight, fitted.weight)  # set from the data, unchanged by training
    assert torch.equal(model.state_dict()["0.weight"], fitted.weight)  # so checkpoints carry it


def test_label_smoothing_is_in_the_training_loss_not_in_val_loss(tiny):
    """A learning rate too small to move the weights: train_loss is then the smoothed loss of
    the initial model on the training set, while val_loss stays plain cross-entropy."""
    cfg = train_config("logistic", epochs=1, lr=1e-12, bs=512, label_smoothing=0.3)
    initial, _, _ = build_model(cfg, torch.device("cpu"))
    model, history = train_model(cfg, *tiny, torch.device("cpu"))
    x, y = tiny[0].tensors
    with torch.no_grad():
        out = initial(x)
    expected = F.cross_entropy(out, y, label_smoothing=0.3).item()
    assert history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    plain_train = F.cross_entropy(out, y).item()  # near-uniform outputs: close, yet apart
    assert history[0]["train_loss"] != pytest.approx(plain_train, rel=1e-4)
    valid = Batches(*tiny[1].tensors, 512)
    plain, _ = evaluate_loader(model, cross_entropy, valid, "cpu")
    assert history[0]["val_loss"] == pytest.approx(plain, rel=1e-6)
    assert smoothed(cross_entropy, 0.0) is cross_entropy


def test_logistic_scratch_refuses_label_smoothing():
    with pytest.raises(UserError, match="remove optimizer/weight_decay/label_smoothing"):
        build_model(train_config("logistic_scratch", label_smoothing=0.1), torch.device("cpu"))
