"""The models package: the registry, the contract, and every shipped model."""

import dataclasses
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, tiny_datasets, train_config

from mnist_pipeline.errors import UserError
from mnist_pipeline.models import get_model
from mnist_pipeline.models.contract import Model
from mnist_pipeline.models.fast import WhiteningStem
from mnist_pipeline.train import build_model, train_model

SHIPPED = ("fast", "logistic_scratch", "logistic", "cnn", "cnn_sequential", "cnn_adaptive")
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
    return tiny_datasets((512, 256))


def network(name: str, device="cpu", **overrides):
    return build_model(get_model(name), train_config(name, **overrides), torch.device(device))


def test_registry_names_come_from_the_source_without_importing_torch():
    probe = (
        "import sys; from mnist_pipeline.models import model_names; "
        "print(','.join(model_names()), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [",".join(SHIPPED), "False"]


@pytest.mark.parametrize("name", SHIPPED)
def test_each_name_resolves_to_the_model_its_module_declares(name):
    spec = get_model(name)
    assert isinstance(spec, Model) and spec.name == name
    spec.check(train_config(name))  # every shipped model keeps the contract


def test_unknown_model_lists_valid_ones():
    with pytest.raises(UserError, match="unknown model architecture 'vgg'; valid: fast, logistic"):
        get_model("vgg")


def user_error_with_module(tmp_path, name: str, source: str, call: str):
    """(the UserError ``call`` prints, the module's path) in a copy of the package that has
    one more model module, ``name``.py, holding ``source``."""
    package = tmp_path / "mnist_pipeline"
    shutil.copytree(REPO / "src" / "mnist_pipeline", package)
    module = package / "models" / f"{name}.py"
    module.write_bytes(source if isinstance(source, bytes) else (source + "\n").encode())
    probe = (
        "from mnist_pipeline.errors import UserError\n"
        "from mnist_pipeline.models import get_model, model_names\n"
        f"try:\n    {call}\nexcept UserError as err:\n    print(err)\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip(), module


@pytest.mark.parametrize(
    "source, message",
    [
        ("MODELS = make_models()", "MODELS must be a list written out"),
        ("MODELS = [Model(NAME, build)]", "its name written as a string"),
        (
            "MODELS = [Model('cnn', build)]",
            "model 'cnn' is declared twice, in tutorial.py and zzz_user.py; rename one",
        ),
        ("MODELS = [Model('x', build]", "syntax error at line 1"),
        (b"MODELS = []\0\n", "syntax error: source code string cannot contain null bytes"),
    ],
)
def test_a_module_the_registry_cannot_read_is_refused_in_one_line(tmp_path, source, message):
    """A copy of the package with one more module: the registry names the file and the rule."""
    line, _ = user_error_with_module(tmp_path, "zzz_user", source, "model_names()")
    assert "zzz_user.py" in line and message in line and "\n" not in line


def test_a_module_in_another_encoding_is_read_as_python_reads_it(tmp_path):
    source = (
        b"# -*- coding: latin-1 -*-\n# caf\xe9\nfrom .contract import Model\n"
        b"from .tutorial import Mnist_Logistic as build\nMODELS = [Model('latin', build)]\n"
    )
    call = "print(model_names()[-1], get_model('latin').name)"
    assert user_error_with_module(tmp_path, "zzz_user", source, call)[0] == "latin latin"


def test_a_model_module_that_fails_to_import_is_one_line_naming_the_file(tmp_path):
    source = "import not_installed_anywhere\n\nMODELS = [Model('mine', build)]"
    line, module = user_error_with_module(tmp_path, "mine", source, "get_model('mine')")
    assert line == (
        f"{module}: cannot import it "
        "(ModuleNotFoundError: No module named 'not_installed_anywhere')"
    )


def no_reduction(out, yb):
    return F.cross_entropy(out, yb)


def linear():
    return torch.nn.Linear(784, 10)


@pytest.mark.parametrize(
    "spec, overrides, rule",
    [
        (Model("m", linear, loss=no_reduction), {}, "its loss must accept reduction="),
        (
            Model("m", linear, loss=lambda out, yb, reduction="mean": F.cross_entropy(out, yb)),
            {"label_smoothing": 0.1},
            "label_smoothing is set, but its loss takes no label_smoothing=",
        ),
        (
            Model("m", linear, optimizer=lambda p, c: torch.optim.Adam(p)),
            {"optimizer": "adamw"},
            "it builds its own optimizer; remove models.m.optimizer",
        ),
        (
            Model("m", linear, scheduler=lambda o, c, n: None),
            {"scheduler": "onecycle"},
            "it builds its own schedule; remove models.m.scheduler",
        ),
        (Model("m", linear, step_scheduler="step"), {}, "step_scheduler must be 'epoch' or"),
        (Model("m", linear, loss=5), {}, "its loss must be a function, not a int$"),
    ],
)
def test_a_config_that_breaks_the_contract_is_refused_naming_the_model(spec, overrides, rule):
    with pytest.raises(UserError, match=f"^model 'm': {rule}"):
        spec.check(_named(overrides))


def _named(overrides):
    """A cnn config renamed "m", for a model spec named "m"."""
    return dataclasses.replace(train_config("cnn", **overrides), name="m")


@pytest.mark.parametrize(
    "spec, rule",
    [
        (Model("m", lambda: object()), "build\\(\\) returned a object without parameters"),
        (Model("m", linear, optimizer=lambda p, c: object()), "its optimizer returned a object"),
        (
            Model("m", linear, optimizer=lambda p, c: NoGroups()),
            "its optimizer must have param_groups",
        ),
        (Model("m", linear, scheduler=lambda o, c, n: object()), "its scheduler returned a"),
        (
            Model("m", linear, optimizer=lambda p, c: torch.optim.SGD(p, lr=-c.lr)),
            "its optimizer raised ValueError: Invalid learning rate: -0.1$",
        ),
        (
            Model("m", linear, scheduler=lambda o, c, n: raises()),
            "its scheduler raised RuntimeError: boom$",
        ),
        (
            Model(
                "m",
                linear,
                scheduler=lambda o, c, n: torch.optim.lr_scheduler.ReduceLROnPlateau(o),
                step_scheduler="batch",
            ),
            "ReduceLROnPlateau steps on val_loss each epoch: remove step_scheduler$",
        ),
        (  # a subclass too: fit steps it on val_loss as it does the class
            Model(
                "m",
                linear,
                scheduler=lambda o, c, n: type(
                    "Plateau", (torch.optim.lr_scheduler.ReduceLROnPlateau,), {}
                )(o),
                step_scheduler="batch",
            ),
            "ReduceLROnPlateau steps on val_loss each epoch: remove step_scheduler$",
        ),
    ],
)
def test_what_a_model_builds_is_checked_before_training(spec, rule, tiny, monkeypatch):
    import mnist_pipeline.train as train

    monkeypatch.setattr(train, "get_model", lambda name: spec)
    with pytest.raises(UserError, match=f"^model 'm': {rule}"):
        train_model(_named({}), *tiny, torch.device("cpu"))


def test_reduce_lr_on_plateau_steps_on_val_loss_after_each_epoch(tiny, monkeypatch):
    import mnist_pipeline.train as train

    seen = []

    class Recording(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics):
            seen.append(metrics)
            super().step(metrics)

    spec = Model("m", linear, scheduler=lambda opt, config, steps: Recording(opt))
    monkeypatch.setattr(train, "get_model", lambda name: spec)
    _, history = train_model(_named({"epochs": 3}), *tiny, torch.device("cpu"))
    assert seen == [row["val_loss"] for row in history]


def test_the_training_loss_is_label_smoothed_where_the_config_says():
    spec = get_model("fast")
    assert spec.train_loss(train_config("cnn")) is spec.loss
    out, yb = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    smoothed = spec.train_loss(train_config("cnn", label_smoothing=0.1))(out, yb)
    assert smoothed == F.cross_entropy(out, yb, label_smoothing=0.1)


def raises():
    raise RuntimeError("boom")


def conv_net():
    return torch.nn.Sequential(torch.nn.Conv2d(1, 10, 28), torch.nn.Flatten())


@pytest.mark.parametrize(
    "spec, rule",
    [
        (Model("m", raises), "build\\(\\) raised RuntimeError: boom$"),
        (
            Model("m", lambda: torch.nn.Linear(784, 5)),
            "its network must map a batch of shape \\(2, 784\\) to \\(2, 10\\), got \\(2, 5\\)$",
        ),
        (
            Model("m", conv_net),
            "its network failed on a batch of shape \\(2, 784\\) \\(RuntimeError: .*\\); "
            "a network of images wants image_input=True$",
        ),
    ],
)
def test_a_network_that_cannot_train_is_refused_before_training(spec, rule, tiny, monkeypatch):
    import mnist_pipeline.train as train

    monkeypatch.setattr(train, "get_model", lambda name: spec)
    with pytest.raises(UserError, match=f"^model 'm': {rule}"):
        train_model(_named({}), *tiny, torch.device("cpu"))
    working = dataclasses.replace(spec, build=conv_net, image_input=True)
    monkeypatch.setattr(train, "get_model", lambda name: working)
    train_model(_named({}), *tiny, torch.device("cpu"))  # the same net, told it gets images


class NoGroups:
    def step(self):
        pass

    zero_grad = state_dict = load_state_dict = step


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", SHIPPED)
def test_output_shape(name, device):
    spec = get_model(name)
    model = network(name, device)
    if spec.fit_data is not None:  # fast's stem: fitted on the CPU, copied to the device
        spec.fit_data(model, torch.rand(64, 784))
        assert model[0].weight.device.type == device and model[0].weight.abs().sum() > 0
    x = torch.rand(5, 784, device=device)
    if spec.image_input:
        x = x.view(-1, 1, 28, 28)
    assert model(x).shape == (5, 10)


@pytest.mark.parametrize("name", SHIPPED)
def test_one_fit_changes_parameters_and_lowers_loss(name, tiny):
    cfg = train_config(name, epochs=3, lr=0.05 if name.startswith("logistic") else 0.1)
    before = [p.detach().clone() for p in network(name, epochs=3).parameters()]
    model, history = train_model(cfg, *tiny, torch.device("cpu"))
    after = list(model.parameters())
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_acc"] > 0.3  # chance is 0.1


@pytest.mark.parametrize("size", [28, 32, 64])
def test_cnn_adaptive_takes_any_image_size(size):
    assert network("cnn_adaptive")(torch.rand(3, 1, size, size)).shape == (3, 10)


def test_logistic_scratch_uses_no_torch_nn_or_optim(tiny):
    from mnist_pipeline.optim import recipe

    model = network("logistic_scratch")
    opt = recipe(get_model("logistic_scratch"), model.parameters(), train_config(), 1).optimizer
    assert not isinstance(model, torch.nn.Module)
    assert type(opt).__name__ == "ScratchSGD"  # the hand-written update, not torch.optim
    assert model.weights.requires_grad and model.bias.requires_grad
    assert abs(model.weights.std().item() - 784**-0.5) < 0.005  # Xavier: 1/sqrt(784)


@pytest.mark.parametrize(
    "overrides, rule",
    [
        ({"label_smoothing": 0.1}, "label_smoothing is set, but its loss takes no"),
        ({"optimizer": "adamw"}, "it builds its own optimizer"),
        ({"weight_decay": 0.1}, "its hand-written SGD has no weight decay"),
    ],
)
def test_logistic_scratch_refuses_what_its_sgd_and_nll_cannot_do(overrides, rule, tiny):
    cfg = train_config("logistic_scratch", **overrides)
    with pytest.raises(UserError, match=f"model 'logistic_scratch': {rule}"):
        train_model(cfg, *tiny, torch.device("cpu"))


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


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_whitening_stem_equals_all_its_filters_max_pooled_then_relu(tiny, memory_format):
    """forward convolves half the filters and takes the other half as negated minima: the
    same values as every filter, a 2x2 max pool and a ReLU."""
    images = tiny[0].tensors[0][:64].view(-1, 1, 28, 28)
    stem = WhiteningStem(components=8).to(memory_format=memory_format)
    stem.fit(images)
    full = F.conv2d(images, stem.weight, stride=2, padding=2)
    assert torch.equal(stem(images), F.relu(F.max_pool2d(full, 2)))


def test_fast_stem_comes_from_the_training_images_is_not_trained_and_is_saved(tiny):
    model, _ = train_model(train_config("fast", epochs=2), *tiny, torch.device("cpu"))
    fitted = WhiteningStem()
    fitted.fit(tiny[0].tensors[0])
    assert fitted.weight.abs().sum() > 0
    assert torch.equal(model[0].weight, fitted.weight)  # set from the data, unchanged by training
    assert torch.equal(model.state_dict()["0.weight"], fitted.weight)  # so checkpoints carry it
