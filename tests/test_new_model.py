"""A user's own model from one file: a module in the models package and a params.yaml entry,
trained with torch.optim.Adam and StepLR by the real `dvc repro`, resumed byte for byte; and
torch.optim.lr_scheduler schedules on the pipeline's own SGD and AdamW."""

from __future__ import annotations

import json
import signal
import textwrap

import pytest
from project import REPO_MODELS, commit_all, dvc, make_project, set_params, stop_after_epoch

pytestmark = pytest.mark.e2e

EPOCHS = 3
MLP = '''
"""A small MLP: torch.optim.Adam with a StepLR schedule, both from torch."""

import torch
from torch import nn

from .contract import Model


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


MODELS = [
    Model(
        "mlp",
        build=mlp,
        optimizer=lambda params, config: torch.optim.Adam(params, lr=config.lr),
        scheduler=lambda opt, config, steps: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
    ),
]
'''
# Four torch schedules on the pipeline's optimizers: params.yaml picks SGD or AdamW for each.
SCHEDULED = """
from torch import nn
from torch.optim import lr_scheduler

from .contract import Model


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def every_batch(steps_of):
    return lambda opt, config, steps: steps_of(opt, config.epochs * steps)


MODELS = [
    Model("steplr", mlp, scheduler=lambda opt, config, steps: lr_scheduler.StepLR(opt, 1, 0.5)),
    Model(
        "cosine",
        mlp,
        scheduler=every_batch(lambda opt, total: lr_scheduler.CosineAnnealingLR(opt, total)),
        step_scheduler="batch",
    ),
    Model(
        "onecycle",
        mlp,
        scheduler=every_batch(lambda opt, total: lr_scheduler.OneCycleLR(opt, 0.01, total)),
        step_scheduler="batch",
    ),
    Model(
        "lambdalr",
        mlp,
        scheduler=lambda opt, config, steps: lr_scheduler.LambdaLR(opt, lambda e: 0.8**e),
    ),
]
"""
SCHEDULED_PARAMS = {
    "steplr": {},  # the shared optimizer: SGD
    "cosine": {},
    "onecycle": {"optimizer": "adamw", "bs": 8},  # an epoch long enough to be stopped in
    "lambdalr": {"optimizer": "adamw", "lr": 0.002},
}
# A loss without reduction=: evaluation could not sum it, so the model is refused.
BROKEN = """
import torch.nn.functional as F
from torch import nn

from .contract import Model


def loss(out, yb):
    return F.cross_entropy(out, yb)


MODELS = [Model("broken", lambda: nn.Linear(784, 10), loss=loss)]
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The repo with new model files and their models: entries; nothing else edited."""
    root = tmp_path_factory.mktemp("new-model")
    project = make_project(root, models=("cnn",), sizes=(6000, 200, 100), epochs=EPOCHS)
    package = project / "src" / "mnist_pipeline" / "models"
    (package / "mlp.py").write_text(textwrap.dedent(MLP).lstrip())
    (package / "scheduled.py").write_text(SCHEDULED.lstrip())
    models = {"cnn": REPO_MODELS()["cnn"], "mlp": {"lr": 0.002}, **SCHEDULED_PARAMS}
    set_params(project, models=models)
    commit_all(project, "new models: one file and one params entry each")
    return project


def test_a_new_model_file_trains_evaluates_and_leaves_the_pipeline_clean(project):
    result = dvc(project, "repro")
    assert "Running stage 'train@mlp'" in result.stdout
    assert f"mlp epoch {EPOCHS - 1}:" in result.stdout
    metrics = json.loads((project / "metrics" / "eval.json").read_text())["mlp"]
    assert metrics["val_acc"] > 0.5 and metrics["test_acc"] > 0.5  # chance is 0.1
    summary = (project / "metrics" / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| mlp |"))
    assert f"| {784 * 64 + 64 + 64 * 10 + 10:,} |" in row  # its parameters
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."


def test_the_new_model_resumes_to_a_byte_identical_model(project):
    dvc(project, "repro")
    model = project / "models" / "mlp.pt"
    history = project / "plots" / "history" / "mlp.tsv"
    uninterrupted = model.read_bytes(), history.read_bytes()
    log = stop_after_epoch(project, "mlp", 0, signal.SIGKILL, EPOCHS)
    assert "mlp epoch 0:" in log
    result = dvc(project, "repro")
    assert f"train: resuming from .resume/mlp.pt at epoch 1 of {EPOCHS}" in result.stdout
    assert (model.read_bytes(), history.read_bytes()) == uninterrupted


def test_torch_schedules_train_on_our_optimizers_and_resume_to_identical_bytes(project):
    """StepLR, CosineAnnealingLR, OneCycleLR and LambdaLR on the pipeline's SGD and AdamW:
    each learns; OneCycleLR on AdamW (lr and beta1 set every batch), killed after its first
    epoch, resumes to the model and history of a run that was never stopped."""
    dvc(project, "repro")
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    for name in SCHEDULED_PARAMS:
        assert metrics[name]["val_acc"] > 0.5, name  # chance is 0.1
    model = project / "models" / "onecycle.pt"
    history = project / "plots" / "history" / "onecycle.tsv"
    uninterrupted = model.read_bytes(), history.read_bytes()
    log = stop_after_epoch(project, "onecycle", 0, signal.SIGKILL, EPOCHS)
    assert "onecycle epoch 0:" in log
    result = dvc(project, "repro", "train@onecycle")
    assert f"train: resuming from .resume/onecycle.pt at epoch 1 of {EPOCHS}" in result.stdout
    assert (model.read_bytes(), history.read_bytes()) == uninterrupted


def test_a_model_that_breaks_the_contract_is_refused_in_one_line(project):
    (project / "src" / "mnist_pipeline" / "models" / "broken.py").write_text(BROKEN)
    set_params(project, models={"broken": {}})
    result = dvc(project, "repro", "train@broken", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: model")]
    assert errors == ["error: model 'broken': its loss must accept reduction= ('mean' or 'sum')"]
    assert "Traceback" not in result.stderr
