"""train.py: fit and train_model: determinism, divergence, any optimizer, the training loss."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_datasets, train_config

from mnist_pipeline.loader import Batches
from mnist_pipeline.models import get_model
from mnist_pipeline.models.contract import Model
from mnist_pipeline.train import DivergenceError, build_model, evaluate_loader, train_model


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
    # fast warms its lr up over one cycle (its own schedule): the lr of the step that diverged
    at = r"[0-9.]+e\+[0-9]+" if arch == "fast" else f"{lr:g}".replace("+", r"\+")
    match = rf"model '{arch}' diverged in epoch 0: loss is (nan|inf) at lr {at}; lower lr"
    with pytest.raises(DivergenceError, match=match):
        train_model(train_config(arch, lr=lr), *tiny_datasets(), torch.device("cpu"))


def test_label_smoothing_is_in_the_training_loss_not_in_val_loss():
    """A learning rate too small to move the weights: train_loss is then the smoothed loss of
    the initial model on the training set, while val_loss stays plain cross-entropy."""
    datasets = tiny_datasets((512, 256))
    cfg = train_config("logistic", epochs=1, lr=1e-12, bs=512, label_smoothing=0.3)
    initial = build_model(get_model("logistic"), cfg, torch.device("cpu"))
    model, history = train_model(cfg, *datasets, torch.device("cpu"))
    x, y = datasets[0].tensors
    with torch.no_grad():
        out = initial(x)
    expected = F.cross_entropy(out, y, label_smoothing=0.3).item()
    assert history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    plain_train = F.cross_entropy(out, y).item()  # near-uniform outputs: close, yet apart
    assert history[0]["train_loss"] != pytest.approx(plain_train, rel=1e-4)
    plain, _ = evaluate_loader(model, F.cross_entropy, Batches(*datasets[1].tensors, 512), "cpu")
    assert history[0]["val_loss"] == pytest.approx(plain, rel=1e-6)


def adam_model(step_scheduler="epoch"):
    return Model(
        "adam_mlp",
        lambda: torch.nn.Sequential(
            torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        ),
        optimizer=lambda params, config: torch.optim.Adam(params, lr=config.lr),
        scheduler=lambda opt, config, steps: torch.optim.lr_scheduler.StepLR(opt, 1, 0.5),
        step_scheduler=step_scheduler,
    )


@pytest.mark.parametrize("every, lr_after", [("epoch", 0.01 / 8), ("batch", 0.01 / 2**24)])
def test_fit_takes_torch_optim_and_a_torch_scheduler(monkeypatch, every, lr_after):
    """The tutorial's fit took any optimizer: torch.optim.Adam with StepLR trains, the schedule
    steps per epoch (torch's convention) or per batch, and the lr is read from param_groups."""
    import mnist_pipeline.train as train

    monkeypatch.setattr(train, "get_model", lambda name: adam_model(every))
    seen = []
    cfg = dataclasses.replace(train_config("cnn", epochs=3, lr=0.01, bs=32), name="adam_mlp")
    model, history = train_model(
        cfg, *tiny_datasets(), torch.device("cpu"), on_epoch=lambda state: seen.append(state)
    )
    assert history[-1]["val_acc"] > 0.5 and history[-1]["train_loss"] < history[0]["train_loss"]
    groups = seen[-1]["optimizer"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(lr_after)  # 3 epochs of 8 batches: halved 3 or 24x
    assert seen[-1]["scheduler"]["last_epoch"] == (3 if every == "epoch" else 24)
